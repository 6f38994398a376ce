"""Tokens already verified, so an app's repeated requests with one token skip the crypto.

A mobile app sends the same token for every request until it expires (often
an hour), and a full verification (base64url checks, JSON, a signature) costs
a hundred or more microseconds. An entry is kept at most ``ttl_s`` and never
past the token's own ``exp`` plus leeway, and it is keyed by the token's
SHA-256, so the cache holds no token. What it trades: a key withdrawn by the
issuer stops accepting its tokens up to ``ttl_s`` later than it otherwise would
(the key set itself is only re-read every ``max_age_s`` anyway).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Entry(Generic[T]):
    value: T
    until: float  # wall-clock seconds


class VerifiedTokens(Generic[T]):
    """A bounded map of token digest to what its verification found, with expiry."""

    def __init__(
        self,
        *,
        size: int = 10_000,
        ttl_s: float = 60.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._size = size
        self._ttl_s = ttl_s
        self._wall_clock = wall_clock
        self._entries: dict[bytes, _Entry[T]] = {}

    @staticmethod
    def digest(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def get(self, digest: bytes) -> T | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if self._wall_clock() >= entry.until:
            del self._entries[digest]
            return None
        return entry.value

    def put(self, digest: bytes, value: T, expires_at: float) -> None:
        """Keep ``value`` until ``expires_at`` (the token's exp plus leeway) or the TTL."""
        if self._size <= 0 or self._ttl_s <= 0:
            return
        until = min(expires_at, self._wall_clock() + self._ttl_s)
        if len(self._entries) >= self._size:
            self._entries.pop(next(iter(self._entries)))  # the oldest entry
        self._entries[digest] = _Entry(value, until)

    def __len__(self) -> int:
        return len(self._entries)
