"""The shared queue through a database outage: what waits keeps waiting, and goes on after."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

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
