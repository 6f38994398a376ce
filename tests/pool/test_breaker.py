"""The circuit breaker on chat outcomes, reporting into a real scheduler, on an injected clock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from service.errors import Code, InvalidRequest, ProviderError, UpstreamLost
from service.pool import CircuitBreaker, HealthMonitor, HostPool
from service.providers.base import HostInventory
from service.scheduler import Host, Scheduler
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
    clock = Clock()
    breaker = CircuitBreaker(scheduler, "ollama", trip_after=trip_after, open_s=open_s, clock=clock)
    probe = ScriptedProbe()
    monitor = HealthMonitor(
        scheduler,
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
    breaker.failed("a", HTTP_500)
    breaker.failed("a", HTTP_500)
    assert state(scheduler, "a") == (True, HTTP_500.message)  # the error shows before it trips
    breaker.succeeded("a")  # a success in between starts the count again
    breaker.failed("a", HTTP_500)
    breaker.failed("a", HTTP_500)
    assert state(scheduler, "a")[0] is True
    breaker.failed("a", HTTP_500)
    up, error = state(scheduler, "a")
    assert not up and breaker.is_open("a")
    assert error == f"3 chat(s) failed in a row; the last: {HTTP_500.message}"
    await monitor.check()  # the host answers health checks: it stays out all the same
    assert state(scheduler, "a") == (False, error)
    assert state(scheduler, "b") == (True, "")


async def test_a_passing_health_check_lets_it_back_on_trial_after_open_s() -> None:
    scheduler, breaker, clock, monitor, _ = setup(trip_after=2, open_s=30.0)
    breaker.failed("a", HTTP_500)
    breaker.failed("a", HTTP_500)
    clock.now = 29.0
    await monitor.check()
    assert state(scheduler, "a")[0] is False
    clock.now = 30.0
    await monitor.check()
    assert state(scheduler, "a")[0] is True and not breaker.is_open("a")
    breaker.failed("a", HTTP_500)  # on trial, one failure is enough
    assert state(scheduler, "a")[0] is False
    clock.now = 60.0
    await monitor.check()
    breaker.succeeded("a")  # on trial, one success closes it
    breaker.failed("a", HTTP_500)
    assert state(scheduler, "a")[0] is True  # closed: the count starts afresh, 1 of 2


async def test_a_failing_health_check_keeps_it_out_whatever_the_breaker() -> None:
    scheduler, breaker, _, monitor, probe = setup(trip_after=1, open_s=0.0)
    breaker.failed("a", HTTP_500)
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
def test_failures_that_are_not_the_hosts_fault_do_not_count(exc: BaseException) -> None:
    scheduler, breaker, *_ = setup(trip_after=1)
    breaker.failed("a", exc)
    assert state(scheduler, "a") == (True, "")


class Named:
    """A stand-in bridge: HostPool only hands it to the call."""

    def __init__(self, name: str) -> None:
        self.name = name


async def test_a_turn_that_failed_before_output_runs_once_more_on_another_host() -> None:
    scheduler, breaker, *_ = setup(trip_after=3)
    bridges: dict[str, Any] = {"a": Named("a"), "b": Named("b")}
    pool = HostPool(scheduler, "ollama", bridges, retry_after_s=1.0, breaker=breaker)
    ran: list[str] = []

    async def call(bridge: Any) -> None:
        ran.append(bridge.name)
        if bridge.name == "a":
            raise HTTP_500

    ticket = scheduler.submit(user_id="u", provider="ollama", request_id="r-1")
    assert ticket.holds_slot and ticket.backend == "a"  # the first host, both idle
    loop = asyncio.get_running_loop()
    await pool.run(ticket, call, sent=lambda: False, deadline=loop.time() + 5)
    assert ran == ["a", "b"] and ticket.backend == "b"
    assert state(scheduler, "a") == (True, HTTP_500.message)  # one failure counted
    scheduler.finish(ticket, "completed")


async def test_the_retry_is_once_and_never_after_output() -> None:
    scheduler, breaker, *_ = setup(trip_after=5)
    bridges: dict[str, Any] = {"a": Named("a"), "b": Named("b")}
    pool = HostPool(scheduler, "ollama", bridges, retry_after_s=1.0, breaker=breaker)
    ran: list[str] = []

    async def failing(bridge: Any) -> None:
        ran.append(bridge.name)
        raise HTTP_500

    loop = asyncio.get_running_loop()
    ticket = scheduler.submit(user_id="u", provider="ollama", request_id="r-1")
    with pytest.raises(ProviderError):
        await pool.run(ticket, failing, sent=lambda: False, deadline=loop.time() + 5)
    assert ran == ["a", "b"]  # tried once more, not again
    scheduler.finish(ticket, "failed")

    ran.clear()
    ticket = scheduler.submit(user_id="u", provider="ollama", request_id="r-2")
    with pytest.raises(ProviderError):
        await pool.run(ticket, failing, sent=lambda: True, deadline=loop.time() + 5)
    assert len(ran) == 1  # the client saw output: no second attempt
    scheduler.finish(ticket, "failed")


async def test_affinity_never_sends_a_turn_to_a_host_that_is_out() -> None:
    scheduler, breaker, *_ = setup(trip_after=1)
    first = scheduler.submit(user_id="u", provider="ollama", request_id="r-1", conversation_id="c")
    assert first.backend == "a"
    scheduler.finish(first, "completed")
    breaker.failed("a", HTTP_500)
    follow_up = scheduler.submit(
        user_id="u", provider="ollama", request_id="r-2", conversation_id="c"
    )
    assert follow_up.holds_slot and follow_up.backend == "b"
    scheduler.finish(follow_up, "completed")


async def test_a_lone_host_or_a_model_no_other_host_serves_is_not_asked_twice() -> None:
    scheduler = Scheduler(
        slots={}, hosts={"ollama": [Host("a", 1), Host("b", 1, models=frozenset({"other"}))]}
    )
    breaker = CircuitBreaker(scheduler, "ollama", trip_after=5, open_s=0.0, clock=Clock())
    bridges: dict[str, Any] = {"a": Named("a"), "b": Named("b")}
    pool = HostPool(scheduler, "ollama", bridges, retry_after_s=1.0, breaker=breaker)
    ran: list[str] = []

    async def failing(bridge: Any) -> None:
        ran.append(bridge.name)
        raise HTTP_500

    loop = asyncio.get_running_loop()
    ticket = scheduler.submit(user_id="u", provider="ollama", request_id="r-1", model="m")
    assert ticket.backend == "a"  # b does not serve m
    with pytest.raises(ProviderError):
        await pool.run(ticket, failing, sent=lambda: False, deadline=loop.time() + 5)
    assert ran == ["a"]
    scheduler.finish(ticket, "failed")
