"""Limits in process: tiers, the request-rate bucket and the UTC budgets, on injected clocks."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from service.content import Usage
from service.errors import Code, LimitReached
from service.limits import Limits, LimitSet, LimitsSection
from service.limits.bucket import RequestRate
from service.store.base import TokenSpend


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Spend:
    """Spend per (user, day) and month, as the store would report it."""

    def __init__(self) -> None:
        self.days: dict[tuple[str, date], int] = {}
        self.reads = 0

    def add(self, user: str, day: date, tokens: int) -> None:
        self.days[(user, day)] = self.days.get((user, day), 0) + tokens

    async def token_spend(self, user_id: str, day: date) -> TokenSpend:
        self.reads += 1
        month = sum(
            n
            for (u, d), n in self.days.items()
            if u == user_id and (d.year, d.month) == (day.year, day.month) and d <= day
        )
        return TokenSpend(self.days.get((user_id, day), 0), month)


def epoch(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()  # type: ignore[misc]


SECTION = LimitsSection(
    requests_per_minute=2,
    max_output_tokens=100,
    tokens_per_day=50,
    tiers={
        "pro": LimitSet(requests_per_minute=0, tokens_per_day=1000, tokens_per_month=5000),
        "capped": LimitSet(max_output_tokens=10, max_active=1),
    },
)


def test_a_tier_overrides_only_what_it_names_and_zero_means_unlimited() -> None:
    default = SECTION.resolve("")
    assert (default.requests_per_minute, default.tokens_per_day, default.tier) == (2, 50, "")
    pro = SECTION.resolve("pro")
    assert (pro.requests_per_minute, pro.tokens_per_day, pro.tokens_per_month) == (0, 1000, 5000)
    assert pro.max_output_tokens == 100  # inherited
    capped = SECTION.resolve("capped")
    assert (capped.max_output_tokens, capped.max_active, capped.requests_per_minute) == (10, 1, 2)
    assert SECTION.resolve("no-such-tier") == default
    assert capped.cap_output(1024) == 10 and capped.cap_output(5) == 5
    assert LimitsSection().resolve("").cap_output(1024) == 1024  # absent: unlimited


def test_config_refuses_negative_or_unknown_keys() -> None:
    with pytest.raises(ValueError):
        LimitsSection(requests_per_minute=-1)
    with pytest.raises(ValueError):
        LimitsSection.model_validate({"tiers": {"pro": {"tokens_per_week": 5}}})


async def test_request_rate_bursts_then_refills_one_request_per_interval() -> None:
    mono = Clock(100.0)
    limits = Limits(SECTION, Spend(), clock=mono, wall_clock=Clock(epoch(2026, 3, 5, 12)))
    await limits.admit("alice")
    await limits.admit("alice")
    with pytest.raises(LimitReached) as refused:
        await limits.admit("alice")
    assert refused.value.code is Code.RESOURCE_EXHAUSTED
    assert refused.value.retry_after_s == 30.0  # 2 per minute: one every 30 s
    assert "requests_per_minute=2" in refused.value.message
    await limits.admit("bob")  # another user's bucket is untouched

    mono.now += 29.0
    with pytest.raises(LimitReached) as again:
        await limits.admit("alice")
    assert again.value.retry_after_s == 1.0
    mono.now += 1.0
    await limits.admit("alice")


async def test_a_tier_without_a_rate_limit_is_never_refused_for_rate() -> None:
    tiers = {"alice": "pro"}
    limits = Limits(
        SECTION,
        Spend(),
        tier_of=lambda u: tiers.get(u, ""),
        clock=Clock(0.0),
        wall_clock=Clock(epoch(2026, 3, 5, 12)),
    )
    for _ in range(20):
        await limits.admit("alice")
    await limits.admit("bob")
    await limits.admit("bob")
    with pytest.raises(LimitReached):
        await limits.admit("bob")


async def test_work_the_user_did_not_ask_for_spends_tokens_not_the_request_rate() -> None:
    """A history summary (request=False) is checked against the budgets only."""
    spend = Spend()
    section = LimitsSection(requests_per_minute=1, tokens_per_day=50)
    limits = Limits(section, spend, clock=Clock(0.0), wall_clock=Clock(epoch(2026, 3, 5, 12)))
    for _ in range(3):
        await (await limits.admit("alice", request=False)).settle(Usage())
    await limits.admit("alice")  # the user's one request a minute is still there
    summary = await limits.admit("alice", request=False)
    await summary.refund()  # a refund gives back no request it never took
    with pytest.raises(LimitReached, match="requests_per_minute"):
        await limits.admit("alice")
    spend.add("alice", date(2026, 3, 5), 50)
    with pytest.raises(LimitReached, match="tokens_per_day"):
        await limits.admit("alice", request=False)


async def test_daily_budget_refuses_until_utc_midnight() -> None:
    spend, wall = Spend(), Clock(epoch(2026, 3, 5, 23, 0))
    limits = Limits(LimitsSection(tokens_per_day=50), spend, clock=Clock(0.0), wall_clock=wall)
    spend.add("alice", date(2026, 3, 5), 49)
    await limits.admit("alice")  # under budget: admitted, whatever the turn then spends
    spend.add("alice", date(2026, 3, 5), 30)
    with pytest.raises(LimitReached) as refused:
        await limits.admit("alice")
    assert refused.value.retry_after_s == 3600.0
    assert "tokens_per_day=50" in refused.value.message
    assert "79 of" in refused.value.message and "2026-03-06 00:00 UTC" in refused.value.message
    await limits.admit("bob")

    wall.now = epoch(2026, 3, 6, 0, 0, 1)  # a new UTC day
    await limits.admit("alice")


async def test_monthly_budget_is_named_first_and_resets_on_the_first() -> None:
    spend, wall = Spend(), Clock(epoch(2026, 12, 31, 12))
    section = LimitsSection(tokens_per_day=10, tokens_per_month=100)
    limits = Limits(section, spend, clock=Clock(0.0), wall_clock=wall)
    spend.add("alice", date(2026, 12, 1), 95)
    spend.add("alice", date(2026, 12, 31), 10)
    with pytest.raises(LimitReached) as refused:
        await limits.admit("alice")
    assert "tokens_per_month=100" in refused.value.message
    assert refused.value.retry_after_s == 12 * 3600.0  # to 2027-01-01 00:00 UTC
    wall.now = epoch(2027, 1, 1, 0, 0)
    await limits.admit("alice")


async def test_no_budget_means_no_store_read() -> None:
    spend = Spend()
    limits = Limits(LimitsSection(requests_per_minute=5), spend, clock=Clock(0.0))
    await limits.admit("alice")
    assert spend.reads == 0


async def test_report_gives_spend_left_and_resets() -> None:
    spend = Spend()
    limits = Limits(
        SECTION,
        spend,
        tier_of=lambda u: "pro",
        clock=Clock(0.0),
        wall_clock=Clock(epoch(2026, 3, 5, 12)),
    )
    spend.add("alice", date(2026, 3, 1), 300)
    spend.add("alice", date(2026, 3, 5), 200)
    report = await limits.report("alice")
    assert (report.spent_today, report.spent_this_month) == (200, 500)
    assert (report.left_today, report.left_this_month) == (800, 4500)
    assert report.day_resets_at == datetime(2026, 3, 6, tzinfo=UTC)
    assert report.month_resets_at == datetime(2026, 4, 1, tzinfo=UTC)
    assert report.limits.tier == "pro"
    unlimited = await Limits(LimitsSection(), spend).report("alice")
    assert (unlimited.left_today, unlimited.left_this_month) == (None, None)


def test_buckets_that_refilled_are_forgotten() -> None:
    rate = RequestRate()
    assert rate.take("alice", 60, 0.0) is None
    assert rate.take("bob", 60, 0.0) is None
    rate.prune(0.5)
    assert len(rate) == 2
    rate.prune(1.0)  # one request per second: both full again
    assert len(rate) == 0


def test_a_changed_rate_starts_a_fresh_bucket() -> None:
    rate = RequestRate()
    assert rate.take("alice", 1, 0.0) is None
    assert rate.take("alice", 1, 0.0) == pytest.approx(60.0)
    assert rate.take("alice", 10, 0.0) is None  # tier raised: the new rate applies now
