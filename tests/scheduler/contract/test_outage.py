"""The shared queue through a database outage: what waits keeps waiting, and goes on after."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from service.errors import ServiceUnavailable
from service.scheduler.interface import Admission, RequestScheduler, RequestSpec
from tests.scheduler.contract.conftest import Backend, until

pytestmark = pytest.mark.postgres


async def submit(sched: RequestScheduler, user: str, rid: str) -> Admission:
    return await sched.submit(RequestSpec(rid, user, "ollama"))


class Database:
    """The scheduler's way to its database: refused while ``down`` (a restart, seen from it)."""

    def __init__(self) -> None:
        self.down = False
        self.refused = 0

    async def connect(self, _conn: Any) -> None:  # the pool's init: runs on every new session
        if self.down:
            self.refused += 1
            raise ConnectionRefusedError(111, "Connection refused")


async def test_position_reports_ride_out_a_database_restart(pg: Backend) -> None:
    database = Database()
    sched = await pg.replica(slots={"ollama": 1}, on_connect=database.connect)
    await submit(sched, "x", "blocker")
    waiting = await submit(sched, "alice", "waiting")
    watch = sched.positions(waiting, min_interval_s=0.0)
    assert (await anext(watch)).ahead == 0

    database.down = True
    await sched._pool.expire_connections()  # the sessions the restart ended
    reports = asyncio.ensure_future(anext(watch))
    await until(lambda: reports.done() or database.refused >= 3)  # it looked, and again
    assert not reports.done()  # a failed read of the queue would have ended the watch
    database.down = False
    await sched.finish("blocker", "x", "completed")  # the waiting request runs: watch over
    with pytest.raises(StopAsyncIteration):
        await reports


async def test_position_reports_ride_out_a_connection_left_mid_operation(pg: Backend) -> None:
    # Seen in CI during a database restart: asyncpg raised InternalClientError ("cannot
    # switch to state 12; another operation is in progress") from a connection the
    # server dropped mid-statement, the position report failed, and the waiting request
    # ended "internal" (500) although its acquire would have ridden the outage out.
    sched = await pg.replica(slots={"ollama": 1})
    await submit(sched, "x", "blocker")
    waiting = await submit(sched, "alice", "waiting")
    watch = sched.positions(waiting, min_interval_s=0.0)
    assert (await anext(watch)).ahead == 0
    broken = {"left": 2}

    def mid_operation(read: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def broken_read(*args: Any, **kwargs: Any) -> Any:
            if broken["left"]:
                broken["left"] -= 1
                raise asyncpg.exceptions.InternalClientError(
                    "cannot switch to state 12; another operation (2) is in progress"
                )
            return await read(*args, **kwargs)

        return broken_read

    # Both reads of a position: the board's shared one and a request's own.
    sched._info = mid_operation(sched._info)  # type: ignore[method-assign]
    sched._board._read = mid_operation(sched._board._read)
    reports = asyncio.ensure_future(anext(watch))
    await until(lambda: reports.done() or broken["left"] == 0)
    assert not reports.done() or reports.exception() is None, reports.exception()
    await sched.finish("blocker", "x", "completed")
    with pytest.raises(StopAsyncIteration):
        await reports


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.exceptions.DeadlockDetectedError("deadlock detected"),
    ],
    ids=["max_connections", "deadlock"],
)
async def test_a_database_that_cannot_take_the_work_now_is_unavailable_not_internal(
    pg: Backend, error: Exception
) -> None:
    # A PostgreSQL at max_connections refuses new sessions with 53300; a deadlock rolls a
    # transaction back with 40P01. Both pass: the caller must hear "retry shortly" (503),
    # not an internal error (500).
    sched = await pg.replica(slots={"ollama": 1})
    await sched.submit(RequestSpec("held", "u", "ollama"))
    real = sched._pool

    class Refusing:
        def acquire(self) -> Any:
            raise error

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

    sched._pool = Refusing()
    try:
        calls = (
            lambda: sched.submit(RequestSpec("r", "u", "ollama")),
            lambda: sched.status("held", "u"),
            lambda: sched.cancel("held", "u"),
            lambda: sched.requests(None),
        )
        for call in calls:
            with pytest.raises(ServiceUnavailable) as caught:
                await call()
            assert caught.value.retry_after_s
    finally:
        sched._pool = real
    await sched.submit(RequestSpec("r", "u", "ollama"))  # and it works again after
    assert (await sched.status("r", "u")).state == "queued"  # behind "held"
