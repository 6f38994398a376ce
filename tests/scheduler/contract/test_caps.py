"""The contract on admission: the waiting caps, max_active, refusals with a retry hint."""

from __future__ import annotations

import pytest

from service.errors import Code, InvalidRequest, LimitReached, NotFound, QueueFull
from service.scheduler.interface import RequestSpec
from tests.scheduler.contract.conftest import Backend, state, submit


async def test_the_per_user_cap_refuses_only_that_user(backend: Backend) -> None:
    sched = await backend.make(slots={"ollama": 1}, max_pending=10, max_pending_per_user=2)
    for rid in ("a0", "a1", "a2"):  # a0 runs: it does not count
        await submit(sched, "alice", rid)
    with pytest.raises(QueueFull) as caught:
        await submit(sched, "alice", "a3")
    err = caught.value
    assert err.code is Code.RESOURCE_EXHAUSTED and err.cap == "max_pending_per_user"
    assert err.retry_after_s is not None and err.retry_after_s >= 1.0
    assert "per-user" in err.message and "max_pending_per_user=2" in err.message
    await submit(sched, "bob", "b0")
    assert (await sched.stats()).total_waiting == 3
    with pytest.raises(NotFound):
        await sched.status("a3", "alice")  # a refused request leaves no record


async def test_the_service_wide_cap_hints_the_time_until_a_place_frees(
    backend: Backend,
) -> None:
    sched = await backend.make(slots={"ollama": 1}, max_pending=3, max_pending_per_user=5)
    await submit(sched, "u0", "first")
    backend.clock.advance(30.0)
    await sched.finish("first", "u0", "completed")  # a service time measured: 30 s
    await submit(sched, "u0", "second")  # runs from now
    for i in range(3):
        await submit(sched, f"u{i + 1}", f"w{i}")
    with pytest.raises(QueueFull) as caught:
        await submit(sched, "newcomer", "n")
    assert caught.value.cap == "max_pending"
    assert "service-wide" in caught.value.message and "max_pending=3" in caught.value.message
    assert caught.value.retry_after_s == pytest.approx(30.0)
    backend.clock.advance(10.0)  # the running request is expected to end 10 s sooner
    with pytest.raises(QueueFull) as later:
        await submit(sched, "newcomer", "n")
    assert later.value.retry_after_s == pytest.approx(20.0)


async def test_a_request_that_starts_at_once_is_admitted_even_when_the_queue_is_full(
    backend: Backend,
) -> None:
    sched = await backend.make(
        slots={"ollama": 1, "anthropic": 2}, max_pending=2, max_pending_per_user=5
    )
    for i in range(3):
        await submit(sched, "alice", f"a{i}")
    with pytest.raises(QueueFull):
        await submit(sched, "alice", "a3")
    fast = await sched.submit(RequestSpec("fast", "alice", "anthropic"))
    assert fast.granted and await state(sched, "fast", "alice") == "running"


async def test_max_active_is_per_user_and_per_call(backend: Backend) -> None:
    sched = await backend.make(slots={"ollama": 1})
    await submit(sched, "alice", "a1", max_active=2)
    await submit(sched, "alice", "a2", max_active=2)
    with pytest.raises(LimitReached) as refused:
        await submit(sched, "alice", "a3", max_active=2)
    assert refused.value.code is Code.RESOURCE_EXHAUSTED and refused.value.limit == "max_active"
    await submit(sched, "bob", "b1", max_active=2)  # bob is not alice
    await submit(sched, "alice", "a4")  # 0: no cap for this call
    await sched.finish("a1", "alice", "completed")
    await submit(sched, "carol", "c1", max_active=1)
    with pytest.raises(LimitReached):
        await submit(sched, "carol", "c2", max_active=1)
    await sched.cancel("c1", "carol")  # a place is freed by a cancel too
    await submit(sched, "carol", "c2", max_active=1)


async def test_invalid_submissions_are_refused(backend: Backend) -> None:
    sched = await backend.make(slots={"ollama": 1})
    for priority in (0, 11):
        with pytest.raises(InvalidRequest, match="priority"):
            await submit(sched, "a", f"p{priority}", priority=priority)
    with pytest.raises(InvalidRequest, match="unknown provider 'openai'"):
        await sched.submit(RequestSpec("r", "a", "openai"))
    with pytest.raises(InvalidRequest, match="user_id"):
        await submit(sched, "", "r")
    with pytest.raises(InvalidRequest, match="request_id"):
        await submit(sched, "a", "a b")
    assert (await sched.stats()).total_running == 0
