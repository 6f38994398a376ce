"""Reservations of admitted turns: budgets under concurrency, settle and refund, the rate refund."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime

import pytest

from service.content import Usage
from service.errors import LimitReached
from service.limits import Limits, LimitsSection
from service.store.base import TokenSpend

DAY = date(2026, 3, 5)
NOON = datetime(2026, 3, 5, 12, tzinfo=UTC).timestamp()


class Spend:
    """The store's spend of one day; every read yields to the loop as a real query would.

    ``gate`` (when set) holds reads after they took their snapshot, so a test can
    run something between a read and the check that uses it.
    """

    def __init__(self) -> None:
        self.day_tokens = 0
        self.gate: asyncio.Event | None = None
        self.reading = asyncio.Event()

    async def token_spend(self, user_id: str, day: date) -> TokenSpend:
        assert day == DAY
        snapshot = TokenSpend(self.day_tokens, self.day_tokens)
        self.reading.set()
        if self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(0)
        return snapshot


def limits_of(section: LimitsSection, spend: Spend) -> Limits:
    return Limits(section, spend, clock=lambda: 0.0, wall_clock=lambda: NOON)


async def test_parallel_turns_cannot_overshoot_the_budget_by_more_than_one_estimate() -> None:
    # The audit's case: tokens_per_day 30, 12 tokens a turn, 20 turns at once, no max_active.
    spend = Spend()
    limits = limits_of(LimitsSection(tokens_per_day=30), spend)
    release = asyncio.Event()
    decided = 0

    async def turn() -> bool:
        nonlocal decided
        try:
            admission = await limits.admit("alice", 12)
        except LimitReached:
            decided += 1
            return False
        decided += 1
        await release.wait()  # every turn is admitted or refused before any ends
        spend.day_tokens += 12  # the turn's usage is stored, then settled
        await admission.settle(Usage(4, 8))
        return True

    turns = [asyncio.create_task(turn()) for _ in range(20)]
    while decided < 20:
        await asyncio.sleep(0)
    release.set()
    admitted = sum(await asyncio.gather(*turns))
    assert admitted == 3  # 0, 12 and 24 reserved were under 30; 36 was not
    assert spend.day_tokens <= 30 + 12
    assert limits.reserved("alice") == 0


async def test_a_refusal_by_reservations_names_them_and_hints_a_short_retry() -> None:
    spend = Spend()
    limits = limits_of(LimitsSection(tokens_per_day=30), spend)
    running = await limits.admit("alice", 30)
    with pytest.raises(LimitReached) as refused:
        await limits.admit("alice", 1)
    assert refused.value.limit == "tokens_per_day"
    assert "0 of tokens_per_day=30 spent today (UTC) and 30 reserved by 1 running turn(s)" in (
        refused.value.message
    )
    assert refused.value.retry_after_s == 5.0  # not midnight: the turn may settle for less
    await running.settle(Usage(5, 5))
    spend.day_tokens = 10
    await limits.admit("alice", 1)  # its real 10 of 30: room again


async def test_a_settle_waits_for_an_admission_reading_the_store() -> None:
    # A turn that stores its usage and settles while another admission is between
    # its read of the store and its check must not drop out of both figures.
    spend = Spend()
    limits = limits_of(LimitsSection(tokens_per_day=30), spend)
    first = await limits.admit("alice", 30)
    spend.gate = asyncio.Event()
    spend.reading.clear()
    second = asyncio.create_task(limits.admit("alice", 1))
    await spend.reading.wait()  # the second read its snapshot: 0 spent
    spend.day_tokens = 30  # the first turn's usage is stored ...
    settled = asyncio.create_task(first.settle(Usage(10, 20)))  # ... and it settles
    spend.gate.set()
    with pytest.raises(LimitReached, match="30 reserved by 1 running turn"):
        await second
    await settled
    assert limits.reserved("alice") == 0
    spend.gate = None
    with pytest.raises(LimitReached, match="30 of tokens_per_day=30 spent today"):
        await limits.admit("alice", 1)


async def test_a_refund_frees_the_reservation_and_the_request() -> None:
    spend = Spend()
    limits = limits_of(LimitsSection(tokens_per_day=30, requests_per_minute=2), spend)
    refused_later = await limits.admit("alice", 30)  # say max_active refused it next
    assert limits.reserved("alice") == 30
    await refused_later.refund()
    await refused_later.settle(Usage(100, 100))  # a second end is ignored
    assert limits.reserved("alice") == 0
    kept = await limits.admit("alice", 10)
    await limits.admit("alice", 10)  # the refunded request did not count: two fit
    with pytest.raises(LimitReached, match="requests_per_minute=2"):
        await limits.admit("alice", 10)
    assert limits.reserved("alice") == 20  # the rate refusal reserved nothing
    await kept.settle(Usage(1, 1))
    await kept.refund()  # ended already: the request stays spent
    with pytest.raises(LimitReached, match="requests_per_minute=2"):
        await limits.admit("alice", 10)


async def test_without_budgets_only_the_rate_is_held_and_given_back() -> None:
    limits = limits_of(LimitsSection(requests_per_minute=1), Spend())
    for _ in range(5):  # each refused later, so none counts
        admission = await limits.admit("bob", 1000)
        assert admission.reserved == 0 and admission.limits.requests_per_minute == 1
        await admission.refund()
    await limits.admit("bob")
    with pytest.raises(LimitReached):
        await limits.admit("bob")


async def test_a_settle_cancelled_while_it_waits_still_drops_the_reservation() -> None:
    spend = Spend()
    limits = limits_of(LimitsSection(tokens_per_day=30), spend)
    first = await limits.admit("alice", 10)
    spend.gate = asyncio.Event()
    spend.reading.clear()
    reading = asyncio.create_task(limits.admit("alice", 5))  # holds the user's lock
    await spend.reading.wait()
    settling = asyncio.create_task(first.settle(Usage(1, 1)))
    await asyncio.sleep(0)  # it waits for the lock
    settling.cancel()  # say the turn's task is cancelled a second time
    with pytest.raises(asyncio.CancelledError):
        await settling
    spend.gate.set()
    second = await reading
    await second.settle(Usage(1, 1))
    assert limits.reserved("alice") == 0
