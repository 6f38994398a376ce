"""The admission check of a model turn: token budgets (with reservations), then the rate."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Protocol

from service.errors import LimitReached
from service.limits.admission import Admission, Reservations
from service.limits.config import LimitsSection, ResolvedLimits
from service.limits.rate_port import LocalRate, RateCounter
from service.limits.windows import UtcWindows
from service.store.base import TokenSpend

# The retry hint when running turns' reservations, not spend, fill a budget.
_RUNNING_TURNS_RETRY_S = 5.0


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
        rate: RateCounter | None = None,
    ) -> None:
        self._section = section
        self._spend = spend
        self._tier_of = tier_of
        self._clock = clock
        self._wall_clock = wall_clock
        # requests_per_minute: this process's buckets, or the replicas' shared ones.
        self._rate: RateCounter = rate or LocalRate(clock)
        self._reservations = Reservations()
        self._resolved: dict[str, ResolvedLimits] = {}

    def of(self, user_id: str) -> ResolvedLimits:
        """The limits that apply to ``user_id`` now (its tier is looked up on every call)."""
        tier = self._tier_of(user_id)
        found = self._resolved.get(tier)
        if found is None:
            found = self._resolved[tier] = self._section.resolve(tier)
        return found

    async def admit(self, user_id: str, estimate: int = 0, *, request: bool = True) -> Admission:
        """Let one model turn of ``user_id`` in, or raise LimitReached naming the limit.

        ``estimate`` (the turn's input estimate plus its output cap) is reserved
        against the budgets until the admission is settled or refunded. A turn
        is admitted while spend plus the reservations of running turns is under
        budget, and then runs to its end even if it goes over: concurrent turns
        overshoot by at most one turn's estimate. ``request`` False: model work the
        user did not ask for (a history summary) spends tokens, not the request rate.
        """
        limits = self.of(user_id)
        end = self._end if request else self._end_uncounted
        if not (limits.tokens_per_day or limits.tokens_per_month):
            if request:
                await self._take_request(user_id, limits)
            return Admission(user_id, limits, 0, end)
        hold = self._reservations.hold(user_id)
        try:
            # Under the user's lock, a turn that settles cannot drop its reservation
            # between this read of the store and the check: its spend would be missed.
            async with hold.lock:
                windows = UtcWindows.at(self._wall_clock())
                spend = self._billed(await self._spend.token_spend(user_id, windows.day))
                _check_budgets(user_id, limits, spend, hold.reserved, hold.turns, windows)
                if request:
                    await self._take_request(user_id, limits)
                reserved = max(0, estimate)
                hold.reserved += reserved
                hold.turns += 1
        finally:
            self._reservations.done_with(user_id, hold)
        return Admission(user_id, limits, reserved, end)

    def reserved(self, user_id: str) -> int:
        """Tokens reserved by the running turns of ``user_id`` in this process."""
        return self._reservations.reserved(user_id)[0]

    async def _take_request(self, user_id: str, limits: ResolvedLimits) -> None:
        if not limits.requests_per_minute:
            return
        wait = await self._rate.take(user_id, limits.requests_per_minute)
        if wait is not None:
            raise LimitReached(
                f"request rate limit reached for {_who(user_id, limits)}: "
                f"requests_per_minute={limits.requests_per_minute}; "
                f"the next request fits in {wait:.1f} s",
                retry_after_s=_hint(wait),
                limit="requests_per_minute",
            )

    async def _end(self, admission: Admission, refund: bool) -> None:
        """Settle or refund ``admission`` (called once, by the admission itself)."""
        user_id, limits = admission.user_id, admission.limits
        if refund and limits.requests_per_minute:
            await self._rate.give_back(user_id, limits.requests_per_minute)
        if not (limits.tokens_per_day or limits.tokens_per_month):
            return
        hold = self._reservations.hold(user_id)
        released = False
        try:
            async with hold.lock:
                hold.reserved -= admission.reserved
                hold.turns -= 1
                released = True
        finally:
            if not released:  # cancelled while waiting for the lock: never leak a reservation
                hold.reserved -= admission.reserved
                hold.turns -= 1
            self._reservations.done_with(user_id, hold)

    async def _end_uncounted(self, admission: Admission, refund: bool) -> None:
        """``_end`` of an admission that took no request: a refund has none to give back."""
        await self._end(admission, False)

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
    user_id: str,
    limits: ResolvedLimits,
    spend: TokenSpend,
    reserved: int,
    running: int,
    windows: UtcWindows,
) -> None:
    # The month first: when both are used up, retrying at midnight would fail again.
    checks = (
        ("tokens_per_month", "monthly", "this month", spend.month_tokens, windows.month_ends_at),
        ("tokens_per_day", "daily", "today", spend.day_tokens, windows.day_ends_at),
    )
    for name, adjective, period, spent, resets_at in checks:
        budget = getattr(limits, name)
        if not budget or spent + reserved < budget:
            continue
        if spent >= budget:  # used up: nothing fits before the window resets
            wait = (resets_at - windows.now).total_seconds()
            held = ""
        else:  # running turns hold the rest; they may settle for less than they reserved
            wait = _RUNNING_TURNS_RETRY_S
            held = f" and {reserved} reserved by {running} running turn(s)"
        raise LimitReached(
            f"{adjective} token budget used up for {_who(user_id, limits)}: "
            f"{spent} of {name}={budget} spent {period} (UTC){held}; "
            f"it resets at {resets_at:%Y-%m-%d %H:%M} UTC",
            retry_after_s=_hint(wait),
            limit=name,
        )


def _who(user_id: str, limits: ResolvedLimits) -> str:
    return f"user {user_id!r}" + (f" (tier {limits.tier!r})" if limits.tier else "")


def _left(budget: int, spent: int) -> int | None:
    return None if not budget else max(0, budget - spent)


def _hint(seconds: float) -> float:
    """A retry hint in whole seconds, never under one: a client retrying then will fit."""
    return float(max(1, math.ceil(seconds)))
