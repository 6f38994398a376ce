"""The contract on shutdown: no new work, the waiting requests end, the running ones drain.

(A shared queue hands waiting requests that carry their input to another
replica instead: ``test_replicas.py``. These carry none.)
"""

from __future__ import annotations

import asyncio

import pytest

from service.errors import ServiceUnavailable
from service.scheduler.hosts import Host
from service.scheduler.interface import RequestSpec
from tests.scheduler.contract.conftest import Backend, state, submit


async def test_shutdown_fails_the_waiters_refuses_newcomers_and_drains_the_running(
    backend: Backend,
) -> None:
    sched = await backend.make(slots={"ollama": 1})
    await submit(sched, "a", "running")
    waiting = await submit(sched, "b", "waiting")
    task = asyncio.create_task(sched.acquire(waiting))
    await asyncio.sleep(0)  # one turn of the loop: the task is inside acquire, waiting
    await sched.begin_shutdown("restarting for an upgrade")
    with pytest.raises(ServiceUnavailable, match="restarting"):
        await asyncio.wait_for(task, 10)
    info = await sched.status("waiting", "b")
    assert info.state == "failed" and isinstance(info.error, ServiceUnavailable)
    with pytest.raises(ServiceUnavailable, match="restarting"):
        await submit(sched, "c", "new")
    stats = await sched.stats()
    assert not stats.accepting and stats.total_waiting == 0 and stats.total_running == 1
    assert await sched.drain(0.05) is False
    draining = asyncio.create_task(sched.drain(10.0))
    await sched.finish("running", "a", "completed")
    assert await draining is True
    assert await sched.drain(1.0) is True  # and at once, now nothing is open
    assert await state(sched, "running", "a") == "completed"


async def test_the_directory_still_answers_and_cancels_while_draining(backend: Backend) -> None:
    sched = await backend.make(slots={"ollama": 1})
    first = await submit(sched, "alice", "run")
    grant = await sched.acquire(first)
    await sched.begin_shutdown()
    assert (await sched.status("run", "alice")).state == "running"
    assert [i.request_id for i in await sched.requests("alice")] == ["run"]
    await sched.cancel("run", "alice")
    assert await asyncio.wait_for(grant.signal.stopped(), 10) == "cancelled"
    await sched.finish("run", "alice", "cancelled")
    assert await sched.drain(10.0) is True


async def test_a_command_waiting_for_its_conversation_ends_at_shutdown(backend: Backend) -> None:
    sched = await backend.make(slots={"ollama": 1})
    await submit(sched, "u", "turn", conversation_id="c")
    command = await sched.submit(RequestSpec("command", "u", "", conversation_id="c"))
    await sched.begin_shutdown("going away")
    with pytest.raises(ServiceUnavailable, match="going away"):
        await sched.acquire(command)
    assert await state(sched, "command", "u") == "failed"
    await sched.finish("turn", "u", "completed")
    assert await sched.drain(10.0) is True


async def test_a_request_put_back_during_shutdown_ends_unavailable(backend: Backend) -> None:
    hosts = {"ollama": [Host("http://a", 1), Host("http://b", 1)]}
    sched = await backend.make(slots={}, hosts=hosts)
    admission = await submit(sched, "u", "r")
    grant = await sched.acquire(admission)
    await sched.begin_shutdown("shutting down")
    await sched.put_back(grant)
    info = await sched.status("r", "u")
    assert info.state == "failed" and isinstance(info.error, ServiceUnavailable)
    stats = await sched.stats()
    assert stats.total_running == 0 and stats.total_waiting == 0
