"""The admission check of a model turn: token budgets, then the request rate."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Protocol

from service.errors import LimitReached
from service.limits.bucket import RequestRate
from service.limits.config import LimitsSection, ResolvedLimits
from service.limits.windows import UtcWindows
from service.store.base import TokenSpend

_PRUNE_EVERY_S = 60.0


class SpendReader(Protocol):
    """Where spend is kept: the store (shared by every process on its database)."""

    async def token_spend(self, user_id: str, day: date) -> TokenSpend: ...


@dataclass(frozen=True, slots=True)
class LimitsReport:
    """A user's limits and spend, for ``/usage`` and GetStatus; ``*_left`` None = unlimited."""

    user_id: str
    limits: ResolvedLimits
    spent_today: int
    spent_this_month: int
    left_today: int | None
    left_this_month: int | None
    day_resets_at: datetime
    month_resets_at: datetime


class Limits:
    """Applies the ``limits`` section to users, each with the tier ``tier_of`` names.

    ``clock`` (monotonic seconds) drives the request-rate buckets and
    ``wall_clock`` (epoch seconds) picks the UTC budget windows; tests inject both.
    """

    def __init__(
        self,
        section: LimitsSection,
        spend: SpendReader,
        *,
        tier_of: Callable[[str], str] = lambda _user: "",
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._section = section
        self._spend = spend
        self._tier_of = tier_of
        self._clock = clock
        self._wall_clock = wall_clock
        self._rate = RequestRate()
        self._resolved: dict[str, ResolvedLimits] = {}
        self._pruned_at = clock()

    def of(self, user_id: str) -> ResolvedLimits:
        """The limits that apply to ``user_id`` now (its tier is looked up on every call)."""
        tier = self._tier_of(user_id)
        found = self._resolved.get(tier)
        if found is None:
            found = self._resolved[tier] = self._section.resolve(tier)
        return found

    async def admit(self, user_id: str) -> ResolvedLimits:
        """Let one model turn of ``user_id`` in, or raise LimitReached naming the limit.

        Budgets are checked against what is already spent: a turn admitted within
        budget runs to its end even if it goes over.
        """
        limits = self.of(user_id)
        if limits.tokens_per_day or limits.tokens_per_month:
            windows = UtcWindows.at(self._wall_clock())
            spend = self._billed(await self._spend.token_spend(user_id, windows.day))
            _check_budgets(user_id, limits, spend, windows)
        if limits.requests_per_minute:
            now = self._clock()
            if now - self._pruned_at >= _PRUNE_EVERY_S:
                self._rate.prune(now)
                self._pruned_at = now
            wait = self._rate.take(user_id, limits.requests_per_minute, now)
            if wait is not None:
                raise LimitReached(
                    f"request rate limit reached for {_who(user_id, limits)}: "
                    f"requests_per_minute={limits.requests_per_minute}; "
                    f"the next request fits in {wait:.1f} s",
                    retry_after_s=_hint(wait),
                    limit="requests_per_minute",
                )
        return limits

    async def report(self, user_id: str) -> LimitsReport:
        """What ``user_id`` may use and has spent in the current UTC day and month."""
        limits = self.of(user_id)
        windows = UtcWindows.at(self._wall_clock())
        spend = self._billed(await self._spend.token_spend(user_id, windows.day))
        return LimitsReport(
            user_id=user_id,
            limits=limits,
            spent_today=spend.day_tokens,
            spent_this_month=spend.month_tokens,
            left_today=_left(limits.tokens_per_day, spend.day_tokens),
            left_this_month=_left(limits.tokens_per_month, spend.month_tokens),
            day_resets_at=windows.day_ends_at,
            month_resets_at=windows.month_ends_at,
        )

    def _billed(self, spend: TokenSpend) -> TokenSpend:
        """Spend as the budgets count it: cache reads and writes at their weights."""
        weights = self._section.weights
        return TokenSpend(
            weights.billed(spend.day_tokens, spend.day_cache_creation, spend.day_cache_read),
            weights.billed(spend.month_tokens, spend.month_cache_creation, spend.month_cache_read),
        )


def _check_budgets(
    user_id: str, limits: ResolvedLimits, spend: TokenSpend, windows: UtcWindows
) -> None:
    # The month first: when both are used up, retrying at midnight would fail again.
    if limits.tokens_per_month and spend.month_tokens >= limits.tokens_per_month:
        raise LimitReached(
            f"monthly token budget used up for {_who(user_id, limits)}: "
            f"{spend.month_tokens} of tokens_per_month={limits.tokens_per_month} spent this "
            f"month (UTC); it resets at {windows.month_ends_at:%Y-%m-%d %H:%M} UTC",
            retry_after_s=_hint(windows.seconds_to_month_end()),
            limit="tokens_per_month",
        )
    if limits.tokens_per_day and spend.day_tokens >= limits.tokens_per_day:
        raise LimitReached(
            f"daily token budget used up for {_who(user_id, limits)}: "
            f"{spend.day_tokens} of tokens_per_day={limits.tokens_per_day} spent today (UTC); "
            f"it resets at {windows.day_ends_at:%Y-%m-%d %H:%M} UTC",
            retry_after_s=_hint(windows.seconds_to_day_end()),
            limit="tokens_per_day",
        )


def _who(user_id: str, limits: ResolvedLimits) -> str:
    return f"user {user_id!r}" + (f" (tier {limits.tier!r})" if limits.tier else "")


def _left(budget: int, spent: int) -> int | None:
    return None if not budget else max(0, budget - spent)


def _hint(seconds: float) -> float:
    """A retry hint in whole seconds, never under one: a client retrying then will fit."""
    return float(max(1, math.ceil(seconds)))
