"""The contract on ending a request in each phase: waiting, just granted, running, storing, ended.

A request ends by its owner's cancel, by its client going away (the task in
``acquire`` is cancelled), by its queue-wait deadline or by ``finish``; in
every phase the slot and the conversation it held go to the next request.
"""

from __future__ import annotations

import asyncio

import pytest

from service.errors import Code, DeadlineExceeded, RequestCancelled
from tests.scheduler.contract.conftest import Backend, position, state, submit

BIG = {"max_pending": 100, "max_pending_per_user": 100}


async def test_a_cancelled_waiting_request_leaves_the_queue_and_never_runs(
    backend: Backend,
) -> None:
    sched = await backend.make(slots={"ollama": 1})
    await submit(sched, "x", "blocker")
    victim = await submit(sched, "alice", "victim")
    await submit(sched, "bob", "after")
    acquiring = asyncio.create_task(sched.acquire(victim))
    info = await sched.cancel("victim", "alice")
    assert (info.state, info.position, info.finished_at is not None) == ("cancelled", -1, True)
    with pytest.raises(RequestCancelled):
        await acquiring
    assert await position(sched, "after", "bob") == 0
    await sched.finish("blocker", "x", "completed")
    assert await state(sched, "after", "bob") == "running"
    ended = await sched.status("victim", "alice")
    assert ended.state == "cancelled" and ended.started_at is None
    assert (await sched.stats()).total_waiting == 0


async def test_a_client_gone_while_waiting_cancels_its_request(backend: Backend) -> None:
    sched = await backend.make(slots={"ollama": 1})
    await submit(sched, "x", "blocker")
    gone = await submit(sched, "alice", "gone")
    task = asyncio.create_task(sched.acquire(gone))
    await asyncio.sleep(0)  # one turn of the loop: the task is inside acquire, waiting
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    info = await sched.status("gone", "alice")
    assert info.state == "cancelled" and isinstance(info.error, RequestCancelled)
    stats = await sched.stats()
    assert (stats.total_waiting, stats.total_running, stats.active_users) == (0, 1, 1)
    await sched.finish("blocker", "x", "completed")
    assert (await sched.stats()).total_running == 0


async def test_a_client_gone_just_after_the_grant_gives_the_slot_to_the_next(
    backend: Backend,
) -> None:
    sched = await backend.make(slots={"ollama": 1})
    await submit(sched, "x", "blocker")
    gone = await submit(sched, "alice", "gone")
    await submit(sched, "bob", "next")
    task = asyncio.create_task(sched.acquire(gone))
    await asyncio.sleep(0)  # one turn of the loop: the task is inside acquire, waiting
    await sched.finish("blocker", "x", "completed")  # the slot goes to "gone"
    assert await state(sched, "gone", "alice") == "running"
    task.cancel()  # the client goes away about when its grant comes
    try:
        await task
    except asyncio.CancelledError:
        pass  # before acquire handed the grant over: the scheduler ends the request
    else:
        # The grant came first (a shared queue answers from the database): the run
        # that got it ends the request as cancelled, as a turn does when its client goes.
        await sched.finish("gone", "alice", "cancelled")
    assert await state(sched, "gone", "alice") == "cancelled"
    assert await state(sched, "next", "bob") == "running"
    assert (await sched.stats()).total_running == 1


async def test_acquire_after_the_owner_cancelled_a_granted_request_frees_its_slot(
    backend: Backend,
) -> None:
    sched = await backend.make(slots={"ollama": 1})
    granted = await submit(sched, "alice", "mine")
    assert granted.granted
    await submit(sched, "bob", "other")
    await sched.cancel("mine", "alice")
    assert await state(sched, "other", "bob") == "queued"  # the slot is still held
    with pytest.raises(RequestCancelled):
        await sched.acquire(granted)
    assert await state(sched, "other", "bob") == "running"
    assert await state(sched, "mine", "alice") == "cancelled"


async def test_a_cancel_while_the_turn_is_stored_keeps_the_conversation_until_finish(
    backend: Backend,
) -> None:
    sched = await backend.make(slots={"ollama": 2}, **BIG)
    first = await submit(sched, "alice", "t1", conversation_id="c")
    await submit(sched, "alice", "t2", conversation_id="c")
    grant = await sched.acquire(first)
    await sched.release(grant)  # the model call is over; the turn is being stored
    info = await sched.cancel("t1", "alice")
    assert info.state == "cancelled" and info.position == -1
    assert await state(sched, "t2", "alice") == "queued"  # t1's history is not stored yet
    await sched.finish("t1", "alice", "completed")
    assert await state(sched, "t1", "alice") == "cancelled"  # stays what its owner made it
    assert await state(sched, "t2", "alice") == "running"


async def test_cancelling_an_ended_request_reports_it_unchanged(backend: Backend) -> None:
    sched = await backend.make(slots={"ollama": 1})
    await submit(sched, "alice", "done")
    backend.clock.advance(3.0)
    await sched.finish("done", "alice", "completed")
    info = await sched.cancel("done", "alice")
    assert info.state == "completed" and info.error is None
    assert info.started_at is not None and info.finished_at == info.started_at + 3.0
    await submit(sched, "alice", "failed")
    await sched.finish("failed", "alice", "failed")
    assert (await sched.cancel("failed", "alice")).state == "failed"


async def test_the_queue_wait_deadline_fails_the_request_and_the_queue_moves_on(
    backend: Backend,
) -> None:
    sched = await backend.make(slots={"ollama": 1})
    await submit(sched, "x", "blocker")
    slow = await submit(sched, "alice", "slow")
    await submit(sched, "bob", "behind")
    with pytest.raises(DeadlineExceeded, match="queue") as caught:
        await sched.acquire(slow, timeout=0.05)
    assert caught.value.code is Code.DEADLINE_EXCEEDED
    assert await position(sched, "behind", "bob") == 0
    assert (await sched.stats()).providers["ollama"].waiting == 1
    await sched.finish("blocker", "x", "completed")
    assert await state(sched, "behind", "bob") == "running"
    info = await sched.status("slow", "alice")
    assert info.state == "failed" and info.started_at is None
    assert isinstance(info.error, DeadlineExceeded)


async def test_waiters_out_of_time_together_leave_nothing_behind(backend: Backend) -> None:
    sched = await backend.make(slots={"ollama": 1}, **BIG)
    await submit(sched, "x", "holder")
    waiters = [await submit(sched, f"u{i % 3}", f"w{i}") for i in range(10)]
    results = await asyncio.gather(
        *(sched.acquire(a, timeout=0.05) for a in waiters), return_exceptions=True
    )
    assert all(isinstance(r, DeadlineExceeded) for r in results), results
    stats = await sched.stats()
    assert (stats.total_waiting, stats.total_running, stats.active_users) == (0, 1, 1)
    await sched.finish("holder", "x", "completed")
    assert (await sched.stats()).total_running == 0


async def test_finish_is_idempotent_and_frees_one_slot_only(backend: Backend) -> None:
    sched = await backend.make(slots={"ollama": 1})
    await submit(sched, "a", "first")
    await submit(sched, "b", "second")
    await submit(sched, "c", "third")
    await sched.finish("first", "a", "completed")
    await sched.finish("first", "a", "failed")
    assert await state(sched, "first", "a") == "completed"
    assert (await state(sched, "second", "b"), await state(sched, "third", "c")) == (
        "running",
        "queued",
    )


async def test_finishing_a_waiting_request_takes_it_out_of_the_queue(backend: Backend) -> None:
    sched = await backend.make(slots={"ollama": 1})
    await submit(sched, "a", "running")
    queued = await submit(sched, "b", "queued")
    await sched.finish("queued", "b", "failed")
    assert await state(sched, "queued", "b") == "failed"
    assert (await sched.stats()).total_waiting == 0
    with pytest.raises(RequestCancelled):
        await sched.acquire(queued)


async def test_a_freed_slot_goes_to_the_waiter_not_to_a_newcomer(backend: Backend) -> None:
    sched = await backend.make(slots={"ollama": 1})
    await submit(sched, "a", "holder")
    waiter = await submit(sched, "b", "waiter", priority=10)
    task = asyncio.create_task(sched.acquire(waiter))
    await sched.finish("holder", "a", "completed")
    await submit(sched, "c", "newcomer", priority=1)
    assert await state(sched, "newcomer", "c") == "queued"
    grant = await asyncio.wait_for(task, 10)
    assert grant.request_id == "waiter" and not grant.signal.is_stopped
    assert (await sched.stats()).total_running == 1
