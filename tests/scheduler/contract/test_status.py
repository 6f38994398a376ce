"""The contract on what the directory reports: a request's record, the lists, the statistics."""

from __future__ import annotations

import pytest

from service.errors import Code, NotFound, ServiceUnavailable
from service.scheduler.interface import RequestSpec
from tests.scheduler.contract.conftest import Backend, submit


async def test_a_requests_record_through_its_life(backend: Backend) -> None:
    sched = await backend.make(slots={"ollama": 1}, default_service_s=10.0)
    start = backend.clock()
    await submit(sched, "x", "blocker")
    await submit(sched, "alice", "r", priority=3, model="m", conversation_id="c")
    queued = await sched.status("r", "alice")
    assert (queued.request_id, queued.user_id, queued.provider) == ("r", "alice", "ollama")
    assert (queued.priority, queued.model, queued.conversation_id) == (3, "m", "c")
    assert (queued.state, queued.position, queued.estimated_wait_s) == ("queued", 0, 10.0)
    assert (queued.enqueued_at, queued.started_at, queued.finished_at) == (start, None, None)
    assert queued.error is None
    backend.clock.advance(5.0)
    await sched.finish("blocker", "x", "completed")
    started = await sched.status("r", "alice")
    assert (started.state, started.position, started.estimated_wait_s) == ("running", -1, 0.0)
    assert (started.started_at, started.finished_at) == (start + 5.0, None)
    backend.clock.advance(2.0)
    down = ServiceUnavailable("the host went away", retry_after_s=2.0)
    await sched.finish("r", "alice", "failed", down)
    ended = await sched.status("r", "alice")
    assert (ended.state, ended.started_at, ended.finished_at) == (
        "failed",
        start + 5.0,
        start + 7.0,
    )
    assert isinstance(ended.error, ServiceUnavailable) and ended.error.code is Code.UNAVAILABLE
    assert (ended.error.message, ended.error.retry_after_s) == ("the host went away", 2.0)
    found = await sched.find("r", "alice")
    assert found is not None and (found.state, found.finished_at) == ("failed", start + 7.0)


async def test_another_users_request_reads_exactly_like_an_unknown_one(backend: Backend) -> None:
    sched = await backend.make(slots={"ollama": 1})
    await submit(sched, "x", "blocker")
    await submit(sched, "alice", "mine")
    messages = set()
    for call in (sched.cancel, sched.status):
        for request_id in ("mine", "no-such-id"):
            with pytest.raises(NotFound) as caught:
                await call(request_id, "mallory")
            assert caught.value.code is Code.NOT_FOUND
            messages.add(caught.value.message.replace(request_id, "<id>"))
        assert await sched.find("mine", "mallory") is None
    assert len(messages) == 1
    assert (await sched.status("mine", "alice")).state == "queued"


async def test_requests_lists_running_then_waiting_by_position(backend: Backend) -> None:
    sched = await backend.make(slots={"ollama": 1})
    await submit(sched, "alice", "r1", model="llama3.2")
    await submit(sched, "bob", "r2", priority=5)
    await submit(sched, "alice", "r3", priority=1)
    everyone = await sched.requests(None)
    assert [(i.request_id, i.state, i.position) for i in everyone] == [
        ("r1", "running", -1),
        ("r3", "queued", 0),
        ("r2", "queued", 1),
    ]
    assert everyone[0].model == "llama3.2" and everyone[0].started_at is not None
    assert [i.request_id for i in await sched.requests("alice")] == ["r1", "r3"]
    assert await sched.requests("nobody") == []
    await sched.cancel("r3", "alice")
    await sched.finish("r1", "alice", "completed")
    assert [i.request_id for i in await sched.requests(None)] == ["r2"]  # no ended ones


async def test_the_statistics_count_waiting_running_users_and_timings(backend: Backend) -> None:
    sched = await backend.make(slots={"ollama": 1, "anthropic": 4})
    await submit(sched, "alice", "a1", priority=3)
    await submit(sched, "alice", "a2", priority=3)
    await submit(sched, "bob", "b1", priority=7)
    await sched.submit(RequestSpec("c1", "carol", "anthropic"))
    backend.clock.advance(12.0)
    await sched.finish("a1", "alice", "completed")
    stats = await sched.stats()
    ollama = stats.providers["ollama"]
    assert (ollama.slots, ollama.running, ollama.waiting) == (1, 1, 1)
    assert dict(ollama.waiting_by_priority) == {7: 1}
    assert ollama.avg_service_s == pytest.approx(12.0)
    assert ollama.avg_wait_s == pytest.approx(0.0 * 0.8 + 12.0 * 0.2)  # 0 s, then 12 s
    assert (stats.providers["anthropic"].running, stats.providers["anthropic"].slots) == (1, 4)
    assert (stats.total_waiting, stats.total_running) == (1, 2)
    assert (stats.max_pending, stats.max_pending_per_user) == (100, 10)
    assert stats.active_users == 3 and stats.accepting


async def test_ended_requests_are_remembered_for_the_retention_period_only(
    backend: Backend,
) -> None:
    sched = await backend.make(slots={"ollama": 1}, retention_s=60.0)
    await submit(sched, "alice", "done")
    backend.clock.advance(5.0)
    await sched.finish("done", "alice", "completed")
    await submit(sched, "alice", "still-running")
    backend.clock.advance(59.0)
    assert (await sched.status("done", "alice")).state == "completed"
    backend.clock.advance(1.0)
    with pytest.raises(NotFound):
        await sched.status("done", "alice")
    with pytest.raises(NotFound):
        await sched.cancel("done", "alice")
    assert await sched.find("done", "alice") is None
    await submit(sched, "alice", "done")  # its id is free again
    # A request that has not ended is kept however long it takes.
    backend.clock.advance(1000.0)
    assert (await sched.status("still-running", "alice")).state == "running"
