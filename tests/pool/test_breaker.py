"""The circuit breaker on chat outcomes, reporting into a real scheduler, on an injected clock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from service.errors import Code, InvalidRequest, ProviderError, UpstreamLost
from service.pool import CircuitBreaker, HealthMonitor, HostPool
from service.providers.base import HostInventory
from service.scheduler import Host, Scheduler
from service.scheduler.interface import Admission, Grant, RequestSpec
from service.scheduler.memory import MemoryScheduler
from tests.pool.test_health import ScriptedProbe


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


HTTP_500 = ProviderError("Ollama at a answered HTTP 500: model runner crashed")


def setup(
    trip_after: int = 3, open_s: float = 30.0
) -> tuple[Scheduler, CircuitBreaker, Clock, HealthMonitor, ScriptedProbe]:
    scheduler = Scheduler(slots={}, hosts={"ollama": [Host("a", 1), Host("b", 1)]})
    port = MemoryScheduler(scheduler)
    clock = Clock()
    breaker = CircuitBreaker(port, "ollama", trip_after=trip_after, open_s=open_s, clock=clock)
    probe = ScriptedProbe()
    monitor = HealthMonitor(
        port,
        provider="ollama",
        probe=probe,
        interval_s=5.0,
        unhealthy_after=2,
        breaker=breaker,
    )
    return scheduler, breaker, clock, monitor, probe


def state(scheduler: Scheduler, name: str) -> tuple[bool, str]:
    host = next(h for h in scheduler.hosts("ollama") if h.name == name)
    return host.up, host.last_error


async def test_failures_in_a_row_take_a_host_out_with_its_last_error() -> None:
    scheduler, breaker, _, monitor, _ = setup(trip_after=3)
    await breaker.failed("a", HTTP_500)
    await breaker.failed("a", HTTP_500)
    assert state(scheduler, "a") == (True, HTTP_500.message)  # the error shows before it trips
    breaker.succeeded("a")  # a success in between starts the count again
    await breaker.failed("a", HTTP_500)
    await breaker.failed("a", HTTP_500)
    assert state(scheduler, "a")[0] is True
    await breaker.failed("a", HTTP_500)
    up, error = state(scheduler, "a")
    assert not up and breaker.is_open("a")
    assert error == f"3 chat(s) failed in a row; the last: {HTTP_500.message}"
    await monitor.check()  # the host answers health checks: it stays out all the same
    assert state(scheduler, "a") == (False, error)
    assert state(scheduler, "b") == (True, "")


async def test_a_passing_health_check_lets_it_back_on_trial_after_open_s() -> None:
    scheduler, breaker, clock, monitor, _ = setup(trip_after=2, open_s=30.0)
    await breaker.failed("a", HTTP_500)
    await breaker.failed("a", HTTP_500)
    clock.now = 29.0
    await monitor.check()
    assert state(scheduler, "a")[0] is False
    clock.now = 30.0
    await monitor.check()
    assert state(scheduler, "a")[0] is True and not breaker.is_open("a")
    await breaker.failed("a", HTTP_500)  # on trial, one failure is enough
    assert state(scheduler, "a")[0] is False
    clock.now = 60.0
    await monitor.check()
    breaker.succeeded("a")  # on trial, one success closes it
    await breaker.failed("a", HTTP_500)
    assert state(scheduler, "a")[0] is True  # closed: the count starts afresh, 1 of 2


async def test_a_failing_health_check_keeps_it_out_whatever_the_breaker() -> None:
    scheduler, breaker, _, monitor, probe = setup(trip_after=1, open_s=0.0)
    await breaker.failed("a", HTTP_500)
    probe.answers["a"] = UpstreamLost("Ollama at a refused the connection", refused=True)
    await monitor.check()
    assert state(scheduler, "a")[0] is False
    probe.answers["a"] = HostInventory(loaded=frozenset())
    await monitor.check()
    assert state(scheduler, "a")[0] is True


@pytest.mark.parametrize(
    "exc",
    [
        InvalidRequest("bad input"),
        ProviderError("model 'x' not found", code=Code.NOT_FOUND),
        ProviderError("rate limited", code=Code.RESOURCE_EXHAUSTED),
        asyncio.CancelledError(),
    ],
)
async def test_failures_that_are_not_the_hosts_fault_do_not_count(exc: BaseException) -> None:
    scheduler, breaker, *_ = setup(trip_after=1)
    await breaker.failed("a", exc)
    assert state(scheduler, "a") == (True, "")


async def granted(
    port: MemoryScheduler, request_id: str, model: str = "", conversation_id: str | None = None
) -> tuple[Admission, Grant]:
    admission = await port.submit(
        RequestSpec(
            request_id=request_id,
            user_id="u",
            provider="ollama",
            model=model,
            conversation_id=conversation_id,
        )
    )
    return admission, await port.acquire(admission)


class Named:
    """A stand-in bridge: HostPool only hands it to the call."""

    def __init__(self, name: str) -> None:
        self.name = name


async def test_a_turn_that_failed_before_output_runs_once_more_on_another_host() -> None:
    scheduler, breaker, *_ = setup(trip_after=3)
    bridges: dict[str, Any] = {"a": Named("a"), "b": Named("b")}
    port = MemoryScheduler(scheduler)
    pool = HostPool(port, "ollama", bridges, retry_after_s=1.0, breaker=breaker)
    ran: list[str] = []

    async def call(bridge: Any) -> None:
        ran.append(bridge.name)
        if bridge.name == "a":
            raise HTTP_500

    admission, grant = await granted(port, "r-1")
    assert grant.backend == "a"  # the first host, both idle
    loop = asyncio.get_running_loop()
    final = await pool.run(admission, grant, call, sent=lambda: False, deadline=loop.time() + 5)
    assert ran == ["a", "b"] and final.backend == "b"
    assert state(scheduler, "a") == (True, HTTP_500.message)  # one failure counted
    await port.finish("r-1", "u", "completed")


async def test_the_retry_is_once_and_never_after_output() -> None:
    scheduler, breaker, *_ = setup(trip_after=5)
    bridges: dict[str, Any] = {"a": Named("a"), "b": Named("b")}
    port = MemoryScheduler(scheduler)
    pool = HostPool(port, "ollama", bridges, retry_after_s=1.0, breaker=breaker)
    ran: list[str] = []

    async def failing(bridge: Any) -> None:
        ran.append(bridge.name)
        raise HTTP_500

    loop = asyncio.get_running_loop()
    admission, grant = await granted(port, "r-1")
    with pytest.raises(ProviderError):
        await pool.run(admission, grant, failing, sent=lambda: False, deadline=loop.time() + 5)
    assert ran == ["a", "b"]  # tried once more, not again
    await port.finish("r-1", "u", "failed")

    ran.clear()
    admission, grant = await granted(port, "r-2")
    with pytest.raises(ProviderError):
        await pool.run(admission, grant, failing, sent=lambda: True, deadline=loop.time() + 5)
    assert len(ran) == 1  # the client saw output: no second attempt
    await port.finish("r-2", "u", "failed")


async def test_affinity_never_sends_a_turn_to_a_host_that_is_out() -> None:
    scheduler, breaker, *_ = setup(trip_after=1)
    first = scheduler.submit(user_id="u", provider="ollama", request_id="r-1", conversation_id="c")
    assert first.backend == "a"
    scheduler.finish(first, "completed")
    await breaker.failed("a", HTTP_500)
    follow_up = scheduler.submit(
        user_id="u", provider="ollama", request_id="r-2", conversation_id="c"
    )
    assert follow_up.holds_slot and follow_up.backend == "b"
    scheduler.finish(follow_up, "completed")


async def test_a_lone_host_or_a_model_no_other_host_serves_is_not_asked_twice() -> None:
    scheduler = Scheduler(
        slots={}, hosts={"ollama": [Host("a", 1), Host("b", 1, models=frozenset({"other"}))]}
    )
    breaker = CircuitBreaker(
        MemoryScheduler(scheduler), "ollama", trip_after=5, open_s=0.0, clock=Clock()
    )
    bridges: dict[str, Any] = {"a": Named("a"), "b": Named("b")}
    port = MemoryScheduler(scheduler)
    pool = HostPool(port, "ollama", bridges, retry_after_s=1.0, breaker=breaker)
    ran: list[str] = []

    async def failing(bridge: Any) -> None:
        ran.append(bridge.name)
        raise HTTP_500

    loop = asyncio.get_running_loop()
    admission, grant = await granted(port, "r-1", model="m")
    assert grant.backend == "a"  # b does not serve m
    with pytest.raises(ProviderError):
        await pool.run(admission, grant, failing, sent=lambda: False, deadline=loop.time() + 5)
    assert ran == ["a"]
    await port.finish("r-1", "u", "failed")


async def test_a_lone_host_is_never_taken_out_of_its_pool() -> None:
    scheduler = Scheduler(slots={}, hosts={"ollama": [Host("a", 1)]})
    breaker = CircuitBreaker(
        MemoryScheduler(scheduler), "ollama", trip_after=1, open_s=30.0, clock=Clock()
    )
    for _ in range(5):
        await breaker.failed("a", HTTP_500)
    assert state(scheduler, "a") == (True, HTTP_500.message)  # the error shows, the host stays
    assert not breaker.is_open("a")
