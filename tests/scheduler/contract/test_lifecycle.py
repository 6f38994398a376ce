"""The contract on a request's life: caps, cancel, positions, the directory, shutdown."""

from __future__ import annotations

import asyncio

import pytest

from service.errors import (
    Code,
    DeadlineExceeded,
    InvalidRequest,
    LimitReached,
    NotFound,
    QueueFull,
    RequestCancelled,
    ServiceUnavailable,
)
from service.scheduler.hosts import Host
from service.scheduler.interface import Admission, RequestScheduler, RequestSpec
from tests.scheduler.contract.conftest import Backend, until


async def submit(sched: RequestScheduler, user: str, rid: str, **kw: object) -> Admission:
    return await sched.submit(RequestSpec(rid, user, "ollama", **kw))  # type: ignore[arg-type]


async def test_queue_caps_refuse_with_a_retry_hint(backend: Backend) -> None:
    sched = await backend.make(slots={"ollama": 1}, max_pending=2, max_pending_per_user=1)
    await submit(sched, "x", "running")  # takes the slot: never counts as waiting
    await submit(sched, "alice", "a1")
    with pytest.raises(QueueFull) as mine:
        await submit(sched, "alice", "a2")
    assert mine.value.cap == "max_pending_per_user"
    assert mine.value.retry_after_s is not None and mine.value.retry_after_s >= 1
    await submit(sched, "bob", "b1")
    with pytest.raises(QueueFull) as full:
        await submit(sched, "carol", "c1")
    assert full.value.cap == "max_pending" and full.value.code is Code.RESOURCE_EXHAUSTED
    assert full.value.retry_after_s is not None and full.value.retry_after_s >= 1
    await sched.cancel("a1", "alice")
    await submit(sched, "carol", "c1")  # a place was freed


async def test_max_active_counts_waiting_and_running_of_that_user(backend: Backend) -> None:
    sched = await backend.make(slots={"ollama": 1})
    await submit(sched, "alice", "a1", max_active=2)
    await submit(sched, "alice", "a2", max_active=2)
    with pytest.raises(LimitReached) as refused:
        await submit(sched, "alice", "a3", max_active=2)
    assert "max_active=2" in refused.value.message
    assert refused.value.retry_after_s is not None and refused.value.retry_after_s >= 1
    await submit(sched, "bob", "b1", max_active=2)
    await sched.finish("a1", "alice", "completed")
    await submit(sched, "alice", "a3", max_active=2)


async def test_a_used_request_id_is_refused_but_another_user_may_use_it(backend: Backend) -> None:
    sched = await backend.make(slots={"ollama": 1})
    await submit(sched, "alice", "same")
    with pytest.raises(Exception) as refused:
        await submit(sched, "alice", "same")
    assert getattr(refused.value, "code", None) is Code.ALREADY_EXISTS
    await submit(sched, "bob", "same")


async def test_cancel_while_queued_ends_the_wait(backend: Backend) -> None:
    sched = await backend.make(slots={"ollama": 1})
    await submit(sched, "x", "blocker")
    queued = await submit(sched, "alice", "q")
    waiter = asyncio.create_task(sched.acquire(queued))
    info = await sched.cancel("q", "alice")
    assert info.state == "cancelled" and info.position == -1
    with pytest.raises(RequestCancelled):
        await waiter
    assert (await sched.status("q", "alice")).state == "cancelled"


async def test_cancel_while_granted_fires_the_signal_and_finish_frees_the_slot(
    backend: Backend,
) -> None:
    sched = await backend.make(slots={"ollama": 1})
    first = await submit(sched, "alice", "g")
    await submit(sched, "bob", "next")
    grant = await sched.acquire(first)
    await sched.cancel("g", "alice")
    assert await asyncio.wait_for(grant.signal.stopped(), 10) == "cancelled"
    assert isinstance(grant.signal.error, RequestCancelled)
    assert (await sched.status("next", "bob")).state == "queued"  # the slot is still held
    await sched.finish("g", "alice", "completed")
    assert (await sched.status("g", "alice")).state == "cancelled"  # stays cancelled
    assert (await sched.status("next", "bob")).state == "running"


async def test_acquire_runs_out_of_its_deadline(backend: Backend) -> None:
    sched = await backend.make(slots={"ollama": 1})
    await submit(sched, "x", "blocker")
    queued = await submit(sched, "alice", "late")
    with pytest.raises(DeadlineExceeded):
        await sched.acquire(queued, timeout=0.05)
    assert (await sched.status("late", "alice")).state == "failed"


async def test_positions_are_ranks_with_growing_estimates(backend: Backend) -> None:
    sched = await backend.make(slots={"ollama": 1}, default_service_s=10.0)
    await submit(sched, "x", "blocker")
    waiting = [await submit(sched, f"u{i}", f"w{i}") for i in range(3)]
    infos = [await sched.status(a.request_id, a.user_id) for a in waiting]
    assert [i.position for i in infos] == [0, 1, 2]
    waits = [i.estimated_wait_s for i in infos]
    assert 0 < waits[0] < waits[1] < waits[2]
    watch = sched.positions(waiting[2], min_interval_s=0.0)
    first = await anext(watch)
    assert first.ahead == 2
    await sched.cancel("w0", "u0")
    assert (await anext(watch)).ahead == 1
    await sched.finish("blocker", "x", "completed")  # w1 runs: w2 is next
    assert (await anext(watch)).ahead == 0
    await sched.finish("w1", "u1", "completed")  # w2 runs: the watch ends
    with pytest.raises(StopAsyncIteration):
        await anext(watch)


async def test_the_directory_answers_the_owner_only(backend: Backend) -> None:
    sched = await backend.make(slots={"ollama": 1})
    await submit(sched, "alice", "mine", model="")
    await submit(sched, "alice", "waiting")
    assert (await sched.status("mine", "alice")).state == "running"
    assert await sched.find("mine", "bob") is None
    with pytest.raises(NotFound):
        await sched.status("mine", "bob")
    with pytest.raises(NotFound):
        await sched.cancel("mine", "bob")
    assert (await sched.status("mine", "alice")).state == "running"
    assert [i.request_id for i in await sched.requests("alice")] == ["mine", "waiting"]
    assert await sched.requests("bob") == []
    assert [(i.request_id, i.state) for i in await sched.requests(None)] == [
        ("mine", "running"),
        ("waiting", "queued"),
    ]


async def test_release_gives_the_slot_to_the_next_request(backend: Backend) -> None:
    sched = await backend.make(slots={"ollama": 1})
    first = await submit(sched, "alice", "a")
    await submit(sched, "bob", "b")
    grant = await sched.acquire(first)
    assert grant.backend == "" and grant.epoch >= 0
    await sched.release(grant)
    assert (await sched.status("b", "bob")).state == "running"
    assert (await sched.status("a", "alice")).state == "running"  # storing its turn
    stats = await sched.stats()
    assert stats.providers["ollama"].running == 1 and stats.total_waiting == 0


async def test_shutdown_refuses_new_work_and_ends_this_replicas_waiting_requests(
    backend: Backend,
) -> None:
    sched = await backend.make(slots={"ollama": 1})
    await submit(sched, "alice", "run")
    queued = await submit(sched, "bob", "wait")
    await sched.begin_shutdown("going away")
    with pytest.raises(ServiceUnavailable):
        await submit(sched, "carol", "new")
    with pytest.raises(ServiceUnavailable):
        await sched.acquire(queued)
    assert not (await sched.stats()).accepting
    assert await sched.drain(0.05) is False  # "run" is still running
    await sched.finish("run", "alice", "completed")
    await until(lambda: sched.drain(0.05))


async def test_when_every_host_of_a_model_is_down_its_requests_are_refused_or_failed(
    backend: Backend,
) -> None:
    hosts = {"ollama": [Host("http://h1", 1, models=frozenset({"m"}))]}
    sched = await backend.make(slots={}, hosts=hosts, down_retry_s=3.0)
    with pytest.raises(InvalidRequest):
        await submit(sched, "alice", "bad", model="other")
    await submit(sched, "alice", "a", model="m")
    waiting = await submit(sched, "bob", "b", model="m")
    await sched.report_host("ollama", "http://h1", up=False, error="refused")
    with pytest.raises(ServiceUnavailable):
        await sched.acquire(waiting)
    assert (await sched.status("b", "bob")).state == "failed"
    with pytest.raises(ServiceUnavailable) as refused:
        await submit(sched, "carol", "c", model="m")
    assert refused.value.retry_after_s == 3.0


async def test_a_second_release_changes_nothing(backend: Backend) -> None:
    sched = await backend.make(slots={"ollama": 1}, default_service_s=10.0)
    first = await submit(sched, "alice", "a")
    grant = await sched.acquire(first)
    backend.clock.advance(4.0)
    await sched.release(grant)
    backend.clock.advance(100.0)
    await sched.release(grant)  # e.g. a retry path calling it again: no second sample
    assert not grant.signal.is_stopped  # and it is still this holder's request
    assert (await sched.stats()).providers["ollama"].avg_service_s == 4.0


async def test_an_admission_says_whether_it_was_granted_at_once(backend: Backend) -> None:
    sched = await backend.make(slots={"ollama": 1})
    assert (await submit(sched, "alice", "first")).granted
    assert not (await submit(sched, "bob", "second")).granted
    owner = "" if backend.name == "memory" else "replica-0"
    assert (await sched.status("first", "alice")).owner == owner
