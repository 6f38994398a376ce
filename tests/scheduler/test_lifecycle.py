"""A request's life: admission caps, cancel, deadlines, disconnects, shutdown, retention."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from service.errors import (
    AgentError,
    Code,
    DeadlineExceeded,
    InvalidRequest,
    NotFound,
    QueueFull,
    RequestCancelled,
    ServiceUnavailable,
)
from service.scheduler import Scheduler


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def until(condition: Callable[[], bool], seconds: float = 2.0) -> None:
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.001)


# -- cancel ---------------------------------------------------------------------------


async def test_cancelling_a_waiting_request_removes_it_and_it_never_runs() -> None:
    sched = Scheduler(slots={"ollama": 1})
    blocker = sched.submit(user_id="x", provider="ollama")
    victim = sched.submit(user_id="alice", provider="ollama")
    after = sched.submit(user_id="bob", provider="ollama")
    acquiring = asyncio.create_task(sched.acquire(victim))
    await until(lambda: victim.awaiting_slot)

    info = sched.cancel(victim.request_id, "alice")
    assert (info.state, info.position, info.finished_at is not None) == ("cancelled", -1, True)
    with pytest.raises(RequestCancelled):
        await acquiring
    assert sched.position(after) == 0
    sched.finish(blocker, "completed")
    assert after.state == "running"
    assert victim.state == "cancelled"
    assert victim.started_at is None
    assert sched.stats().total_waiting == 0


async def test_cancelling_a_running_request_fires_its_callbacks_and_keeps_the_slot() -> None:
    sched = Scheduler(slots={"ollama": 1})
    running = sched.submit(user_id="alice", provider="ollama")
    await sched.acquire(running)
    nxt = sched.submit(user_id="bob", provider="ollama")
    fired: list[str] = []
    running.add_cancel_callback(lambda: fired.append("first"))
    running.add_cancel_callback(lambda: fired.append("second"))

    info = sched.cancel(running.request_id, "alice")
    assert info.state == "cancelled"
    assert fired == ["first", "second"]
    assert running.cancelled
    # The slot is free only when the worker has closed its upstream and finishes.
    assert nxt.state == "queued"
    assert sched.stats().total_running == 1
    sched.finish(running, "completed")
    assert running.state == "cancelled"
    assert nxt.state == "running"
    # A callback added after the cancel runs at once; the earlier ones never run twice.
    running.add_cancel_callback(lambda: fired.append("late"))
    sched.cancel(running.request_id, "alice")
    assert fired == ["first", "second", "late"]


async def test_a_failing_cancel_callback_does_not_stop_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sched = Scheduler(slots={"ollama": 1})
    running = sched.submit(user_id="alice", provider="ollama")
    fired: list[str] = []

    def broken() -> None:
        raise RuntimeError("boom")

    running.add_cancel_callback(broken)
    running.add_cancel_callback(lambda: fired.append("ok"))
    sched.cancel(running.request_id, "alice")
    assert fired == ["ok"]
    assert "cancel callback" in caplog.text


async def test_cancel_of_a_finished_request_reports_it_unchanged() -> None:
    sched = Scheduler(slots={"ollama": 1})
    ticket = sched.submit(user_id="alice", provider="ollama")
    sched.finish(ticket, "completed")
    info = sched.cancel(ticket.request_id, "alice")
    assert info.state == "completed"
    assert info.started_at is not None and info.finished_at is not None


async def test_another_users_request_reads_exactly_like_an_unknown_one() -> None:
    sched = Scheduler(slots={"ollama": 1})
    sched.submit(user_id="x", provider="ollama")
    ticket = sched.submit(user_id="alice", provider="ollama")
    messages = set()
    for call in (sched.cancel, sched.status):
        for request_id, user in [(ticket.request_id, "mallory"), ("no-such-id", "mallory")]:
            with pytest.raises(NotFound) as caught:
                call(request_id, user)
            messages.add(caught.value.message.replace(request_id, "<id>"))
            assert caught.value.code is Code.NOT_FOUND
    assert len(messages) == 1
    assert ticket.state == "queued"
    assert sched.status(ticket.request_id, "alice").state == "queued"


# -- admission -----------------------------------------------------------------------


async def test_per_user_cap_refuses_only_that_user() -> None:
    sched = Scheduler(slots={"ollama": 1}, max_pending=10, max_pending_per_user=2)
    sched.submit(user_id="alice", provider="ollama")  # runs: does not count
    sched.submit(user_id="alice", provider="ollama")
    sched.submit(user_id="alice", provider="ollama")
    with pytest.raises(QueueFull) as caught:
        sched.submit(user_id="alice", provider="ollama")
    err = caught.value
    assert err.code is Code.RESOURCE_EXHAUSTED
    assert err.retry_after_s is not None and err.retry_after_s >= 1.0
    assert "per-user" in err.message and "max_pending_per_user=2" in err.message
    sched.submit(user_id="bob", provider="ollama")
    assert sched.stats().total_waiting == 3


async def test_global_cap_refuses_everyone_with_a_retry_hint() -> None:
    clock = FakeClock()
    sched = Scheduler(slots={"ollama": 1}, max_pending=3, max_pending_per_user=5, clock=clock)
    first = sched.submit(user_id="u0", provider="ollama")
    clock.advance(30.0)
    sched.finish(first, "completed")  # service time measured: 30 s
    sched.submit(user_id="u0", provider="ollama")
    for i in range(3):
        sched.submit(user_id=f"u{i + 1}", provider="ollama")
    with pytest.raises(QueueFull) as caught:
        sched.submit(user_id="newcomer", provider="ollama")
    assert "service-wide" in caught.value.message and "max_pending=3" in caught.value.message
    assert caught.value.retry_after_s == pytest.approx(30.0)


async def test_a_request_that_starts_at_once_is_admitted_even_when_the_queue_is_full() -> None:
    sched = Scheduler(slots={"ollama": 1, "anthropic": 2}, max_pending=2, max_pending_per_user=5)
    for _ in range(3):
        sched.submit(user_id="alice", provider="ollama")
    with pytest.raises(QueueFull):
        sched.submit(user_id="alice", provider="ollama")
    fast = sched.submit(user_id="alice", provider="anthropic")
    assert fast.state == "running"


async def test_invalid_submissions_are_refused() -> None:
    sched = Scheduler(slots={"ollama": 1})
    for priority in (0, 11):
        with pytest.raises(InvalidRequest, match="priority"):
            sched.submit(user_id="a", provider="ollama", priority=priority)
    with pytest.raises(InvalidRequest, match="unknown provider 'openai'"):
        sched.submit(user_id="a", provider="openai")
    sched.submit(user_id="a", provider="ollama", request_id="r1")
    with pytest.raises(AgentError, match="already in use") as duplicate:
        sched.submit(user_id="a", provider="ollama", request_id="r1")
    assert duplicate.value.code is Code.ALREADY_EXISTS
    assert sched.stats().total_running == 1


# -- deadlines and disconnects ---------------------------------------------------------


async def test_queue_wait_deadline_fails_the_request_and_cleans_the_queue() -> None:
    sched = Scheduler(slots={"ollama": 1})
    blocker = sched.submit(user_id="x", provider="ollama")
    slow = sched.submit(user_id="alice", provider="ollama")
    behind = sched.submit(user_id="bob", provider="ollama")
    with pytest.raises(DeadlineExceeded, match="queue") as caught:
        await sched.acquire(slow, timeout=0.05)
    assert caught.value.code is Code.DEADLINE_EXCEEDED
    assert slow.state == "failed"
    assert sched.position(behind) == 0
    assert sched.stats().providers["ollama"].waiting == 1
    sched.finish(blocker, "completed")
    assert behind.state == "running"
    assert slow.started_at is None


async def test_a_disconnect_while_waiting_cancels_the_request() -> None:
    sched = Scheduler(slots={"ollama": 1})
    blocker = sched.submit(user_id="x", provider="ollama")
    gone = sched.submit(user_id="alice", provider="ollama")
    fired: list[bool] = []
    gone.add_cancel_callback(lambda: fired.append(True))
    task = asyncio.create_task(sched.acquire(gone))
    await until(lambda: gone.awaiting_slot)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gone.state == "cancelled"
    assert fired == [True]
    assert sched.stats().total_waiting == 0
    assert sched.active_users() == 1
    sched.finish(blocker, "completed")
    assert sched.stats().total_running == 0


async def test_a_disconnect_just_after_the_slot_was_granted_releases_the_slot() -> None:
    sched = Scheduler(slots={"ollama": 1})
    blocker = sched.submit(user_id="x", provider="ollama")
    gone = sched.submit(user_id="alice", provider="ollama")
    next_in_line = sched.submit(user_id="bob", provider="ollama")
    task = asyncio.create_task(sched.acquire(gone))
    await until(lambda: gone.awaiting_slot)
    sched.finish(blocker, "completed")  # the slot goes to `gone`, whose task has not resumed
    assert gone.state == "running"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gone.state == "cancelled"
    assert next_in_line.state == "running"
    assert sched.stats().total_running == 1


async def test_acquire_after_the_owner_cancelled_a_granted_slot_gives_it_back() -> None:
    sched = Scheduler(slots={"ollama": 1})
    ticket = sched.submit(user_id="alice", provider="ollama")  # granted at submit
    other = sched.submit(user_id="bob", provider="ollama")
    sched.cancel(ticket.request_id, "alice")
    with pytest.raises(RequestCancelled):
        await sched.acquire(ticket)
    assert other.state == "running"


# -- finishing ---------------------------------------------------------------------------


async def test_finish_is_idempotent_and_releases_one_slot_only() -> None:
    sched = Scheduler(slots={"ollama": 1})
    first = sched.submit(user_id="a", provider="ollama")
    second = sched.submit(user_id="b", provider="ollama")
    third = sched.submit(user_id="c", provider="ollama")
    sched.finish(first, "completed")
    sched.finish(first, "failed")
    assert first.state == "completed"
    assert (second.state, third.state) == ("running", "queued")


async def test_finishing_a_queued_request_takes_it_out_of_the_queue() -> None:
    sched = Scheduler(slots={"ollama": 1})
    sched.submit(user_id="a", provider="ollama")
    queued = sched.submit(user_id="b", provider="ollama")
    sched.finish(queued, "failed")
    assert queued.state == "failed"
    assert sched.stats().total_waiting == 0
    with pytest.raises(RequestCancelled):
        await sched.acquire(queued)


async def test_stats_and_active_users() -> None:
    clock = FakeClock()
    sched = Scheduler(slots={"ollama": 1, "anthropic": 4}, clock=clock)
    a = sched.submit(user_id="alice", provider="ollama", priority=3)
    sched.submit(user_id="alice", provider="ollama", priority=3)
    sched.submit(user_id="bob", provider="ollama", priority=7)
    sched.submit(user_id="carol", provider="anthropic")
    clock.advance(12.0)
    sched.finish(a, "completed")
    stats = sched.stats()
    ollama = stats.providers["ollama"]
    assert (ollama.slots, ollama.running, ollama.waiting) == (1, 1, 1)
    assert dict(ollama.waiting_by_priority) == {7: 1}
    assert ollama.avg_service_s == pytest.approx(12.0)
    assert ollama.avg_wait_s == pytest.approx(0.0 * 0.8 + 12.0 * 0.2)  # 0 s, then 12 s
    assert stats.providers["anthropic"].running == 1
    assert (stats.total_waiting, stats.total_running) == (1, 2)
    assert (stats.max_pending, stats.max_pending_per_user) == (100, 10)
    assert stats.active_users == sched.active_users() == 3
    assert stats.accepting


# -- shutdown and retention -----------------------------------------------------------


async def test_shutdown_fails_waiters_refuses_newcomers_and_drains_running() -> None:
    sched = Scheduler(slots={"ollama": 1})
    running = sched.submit(user_id="a", provider="ollama")
    waiting = sched.submit(user_id="b", provider="ollama")
    task = asyncio.create_task(sched.acquire(waiting))
    await until(lambda: waiting.awaiting_slot)

    sched.begin_shutdown("restarting for an upgrade")
    with pytest.raises(ServiceUnavailable, match="restarting"):
        await task
    assert waiting.state == "failed"
    with pytest.raises(ServiceUnavailable):
        sched.submit(user_id="c", provider="ollama")
    assert not sched.stats().accepting

    assert await sched.drain(0.05) is False
    draining = asyncio.create_task(sched.drain(2.0))
    await asyncio.sleep(0.01)
    assert not draining.done()
    sched.finish(running, "completed")
    assert await draining is True
    assert await sched.drain(0.0) is True


async def test_ended_requests_are_remembered_for_the_retention_period_only() -> None:
    clock = FakeClock()
    sched = Scheduler(slots={"ollama": 1}, retention_s=60.0, clock=clock)
    done = sched.submit(user_id="alice", provider="ollama")
    clock.advance(5.0)
    sched.finish(done, "completed")
    still_running = sched.submit(user_id="alice", provider="ollama")
    clock.advance(59.0)
    assert sched.status(done.request_id, "alice").state == "completed"
    clock.advance(1.0)
    with pytest.raises(NotFound):
        sched.status(done.request_id, "alice")
    with pytest.raises(NotFound):
        sched.cancel(done.request_id, "alice")
    # A request that has not ended is kept however long it takes.
    clock.advance(1000.0)
    assert sched.status(still_running.request_id, "alice").state == "running"
    sched.submit(user_id="bob", provider="ollama")  # submit prunes too
    assert sched.retained() == 2
