"""A token bucket per user: ``requests_per_minute`` requests, refilled evenly over a minute."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    rate_per_minute: int
    tokens: float
    at: float  # clock time of ``tokens``


class RequestRate:
    """Buckets of every user, on the caller's clock (seconds, monotonic)."""

    def __init__(self) -> None:
        self._buckets: dict[str, _Bucket] = {}

    def take(self, user_id: str, rate_per_minute: int, now: float) -> float | None:
        """Take one request from the user's bucket; seconds until one fits when it is empty.

        A bucket starts full (a burst of ``rate_per_minute``) and refills at
        ``rate_per_minute / 60`` per second. A changed rate (the user's tier
        changed) starts a fresh, full bucket.
        """
        bucket = self._buckets.get(user_id)
        if bucket is None or bucket.rate_per_minute != rate_per_minute:
            bucket = _Bucket(rate_per_minute, float(rate_per_minute), now)
            self._buckets[user_id] = bucket
        per_second = rate_per_minute / 60.0
        bucket.tokens = min(float(rate_per_minute), bucket.tokens + (now - bucket.at) * per_second)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return (1.0 - bucket.tokens) / per_second

    def give_back(self, user_id: str, rate_per_minute: int) -> None:
        """Return one request taken by ``take`` (it was refused later, so it does not count)."""
        bucket = self._buckets.get(user_id)
        if bucket is not None and bucket.rate_per_minute == rate_per_minute:
            bucket.tokens = min(float(rate_per_minute), bucket.tokens + 1.0)

    def prune(self, now: float) -> None:
        """Forget buckets that have refilled completely: they behave like new ones."""
        full = [
            user
            for user, b in self._buckets.items()
            if b.tokens + (now - b.at) * b.rate_per_minute / 60.0 >= b.rate_per_minute
        ]
        for user in full:
            del self._buckets[user]

    def __len__(self) -> int:
        return len(self._buckets)
