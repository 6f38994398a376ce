"""The contract on a conversation's turns: one at a time, in arrival order, a rule of the one queue.

A turn whose conversation has an earlier turn waiting or running is not
eligible for a slot; it is still an ordinary waiting request: it counts
against the caps, has a position, and can be looked up and cancelled.
"""

from __future__ import annotations

import pytest

from service.errors import NotFound, QueueFull, RequestCancelled
from service.scheduler.interface import RequestSpec
from tests.scheduler.contract.conftest import Backend, position, running, state, submit

BIG = {"max_pending": 100, "max_pending_per_user": 100}


async def test_a_later_turn_waits_for_the_running_one_even_with_free_slots(
    backend: Backend,
) -> None:
    sched = await backend.make(slots={"ollama": 2})
    await submit(sched, "u", "first", conversation_id="c")
    await submit(sched, "u", "second", conversation_id="c")
    await submit(sched, "u", "other", conversation_id="d")
    assert sorted(await running(sched)) == ["first", "other"]
    assert await state(sched, "second", "u") == "queued"
    assert await position(sched, "second", "u") == 0  # it starts when "first" ends
    assert (await sched.stats()).total_waiting == 1
    await sched.finish("first", "u", "completed")
    assert await state(sched, "second", "u") == "running"


async def test_a_blocked_turn_does_not_hold_back_other_requests(backend: Backend) -> None:
    sched = await backend.make(slots={"ollama": 2})
    await submit(sched, "u", "running", conversation_id="c")
    await submit(sched, "u", "blocked", priority=1, conversation_id="c")
    await submit(sched, "v", "stranger", priority=9)
    assert sorted(await running(sched)) == ["running", "stranger"]
    assert await state(sched, "blocked", "u") == "queued"


async def test_turns_of_a_conversation_run_in_arrival_order_whatever_their_priority(
    backend: Backend,
) -> None:
    sched = await backend.make(slots={"ollama": 1}, **BIG)
    await submit(sched, "u", "t0", conversation_id="c")
    for rid, priority in (("t1", 9), ("t2", 5), ("t3", 1)):
        await submit(sched, "u", rid, priority=priority, conversation_id="c")
    order, current = [], "t0"
    for _ in range(3):
        await sched.finish(current, "u", "completed")
        (current,) = await running(sched)
        order.append(current)
    assert order == ["t1", "t2", "t3"]


async def test_a_later_turns_position_counts_the_earlier_turns_it_waits_for(
    backend: Backend,
) -> None:
    sched = await backend.make(slots={"ollama": 1}, **BIG)
    await submit(sched, "u", "t0", conversation_id="c")
    for rid, priority in (("t1", 9), ("t2", 5), ("t3", 1)):
        await submit(sched, "u", rid, priority=priority, conversation_id="c")
    assert [await position(sched, rid, "u") for rid in ("t1", "t2", "t3")] == [0, 1, 2]


async def test_waiting_turns_count_against_the_per_user_cap(backend: Backend) -> None:
    sched = await backend.make(slots={"ollama": 4}, max_pending_per_user=2)
    await submit(sched, "u", "t0", conversation_id="c")  # runs: not counted
    for rid in ("t1", "t2"):
        await submit(sched, "u", rid, conversation_id="c")
    with pytest.raises(QueueFull, match="max_pending_per_user") as refused:
        await submit(sched, "u", "t3", conversation_id="c")
    assert refused.value.retry_after_s is not None and refused.value.retry_after_s >= 1
    assert (await sched.stats()).total_waiting == 2
    # Another conversation with a free slot runs at once, so it never waits.
    assert (await submit(sched, "u", "e1", conversation_id="e")).granted


async def test_cancelling_a_blocked_turn_lets_the_next_one_keep_the_order(
    backend: Backend,
) -> None:
    sched = await backend.make(slots={"ollama": 1})
    await submit(sched, "u", "running", conversation_id="c")
    blocked = await submit(sched, "u", "blocked", conversation_id="c")
    await submit(sched, "u", "last", conversation_id="c")
    with pytest.raises(NotFound):
        await sched.status("blocked", "intruder")
    with pytest.raises(NotFound):
        await sched.cancel("blocked", "intruder")
    assert (await sched.cancel("blocked", "u")).state == "cancelled"
    with pytest.raises(RequestCancelled):
        await sched.acquire(blocked)
    assert await position(sched, "last", "u") == 0
    await sched.finish("running", "u", "completed")
    assert await state(sched, "last", "u") == "running"


async def test_a_cancelled_running_turn_holds_back_the_next_until_it_is_finished(
    backend: Backend,
) -> None:
    # The worker stores the partial turn before it calls finish; the next turn
    # must read that history, so it waits for finish, not for the cancel.
    sched = await backend.make(slots={"ollama": 2})
    await submit(sched, "u", "r", conversation_id="c")
    await submit(sched, "u", "following", conversation_id="c")
    await sched.cancel("r", "u")
    assert await state(sched, "following", "u") == "queued"
    await sched.finish("r", "u", "cancelled")
    assert await state(sched, "following", "u") == "running"


async def test_commands_wait_for_their_conversation_and_stay_out_of_the_provider_figures(
    backend: Backend,
) -> None:
    sched = await backend.make(slots={"ollama": 1})
    await submit(sched, "u", "turn", conversation_id="c")
    await sched.submit(RequestSpec("command", "u", "", conversation_id="c"))
    free = await sched.submit(RequestSpec("free", "u", ""))
    assert free.granted
    assert await state(sched, "command", "u") == "queued"
    stats = await sched.stats()
    assert set(stats.providers) == {"ollama"}
    assert stats.providers["ollama"].waiting == 0
    await sched.finish("turn", "u", "completed")
    assert await state(sched, "command", "u") == "running"
