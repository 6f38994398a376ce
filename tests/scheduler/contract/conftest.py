"""One scheduler contract suite, two adapters: every test taking ``backend`` runs on both.

The PostgreSQL variant needs AGENT_TEST_POSTGRES_URL and is skipped without it.
Each PostgreSQL test gets its own randomly named schema, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest

from service.scheduler import Scheduler
from service.scheduler.interface import Admission, RequestScheduler, RequestSpec
from service.scheduler.memory import MemoryScheduler
from service.scheduler.postgres import PostgresScheduler

POSTGRES_ENV = "AGENT_TEST_POSTGRES_URL"


class FakeClock:
    """A clock that moves only when told (both adapters take it for order keys and ages)."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Backend:
    """Builds schedulers of one adapter; a PostgreSQL one on a fresh schema per test."""

    name: str
    clock: FakeClock = field(default_factory=FakeClock)
    url: str = ""
    schema: str = ""
    opened: list[PostgresScheduler] = field(default_factory=list)

    async def make(self, **settings: Any) -> RequestScheduler:
        """A scheduler with the in-process engine's settings (``slots``, caps, aging...)."""
        if self.name == "memory":
            return MemoryScheduler(Scheduler(clock=self.clock, wall_clock=self.clock, **settings))
        return await self.replica(**settings)

    async def replica(self, replica_id: str = "", **settings: Any) -> PostgresScheduler:
        """Another replica on the same database (PostgreSQL only)."""
        settings.setdefault("poll_s", 0.05)
        scheduler = PostgresScheduler(
            self.url,
            schema=self.schema,
            replica_id=replica_id or f"replica-{len(self.opened)}",
            clock=settings.pop("clock", self.clock),
            **settings,
        )
        await scheduler.open()
        self.opened.append(scheduler)
        return scheduler

    async def sql(self, statement: str, *args: Any) -> Any:
        """Run one query behind the schedulers' backs (PostgreSQL only)."""
        conn = await asyncpg.connect(self.url, server_settings={"search_path": self.schema})
        try:
            return await conn.fetch(statement, *args)
        finally:
            await conn.close()


async def postgres_backend() -> AsyncIterator[Backend]:
    url = os.environ.get(POSTGRES_ENV, "")
    if not url:
        pytest.skip(f"{POSTGRES_ENV} is not set: the PostgreSQL scheduler tests need a database")
    chosen = Backend("postgres", url=url, schema="s_" + secrets.token_hex(8))
    try:
        yield chosen
    finally:
        for scheduler in chosen.opened:
            await scheduler.close()
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{chosen.schema}" CASCADE')
        finally:
            await conn.close()


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.postgres)])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "memory":
        yield Backend("memory")
        return
    async for chosen in postgres_backend():
        yield chosen


@pytest.fixture
async def pg() -> AsyncIterator[Backend]:
    """The PostgreSQL backend alone, for what only a shared queue does (several replicas)."""
    async for chosen in postgres_backend():
        yield chosen


async def until(condition: Callable[[], Any], seconds: float = 10.0) -> None:
    """Wait for ``condition()`` (sync or async) to hold: states, never sleeps."""
    async with asyncio.timeout(seconds):
        while True:
            result = condition()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            await asyncio.sleep(0.01)


async def submit(
    sched: RequestScheduler, user: str, rid: str, priority: int = 5, **kw: Any
) -> Admission:
    """Admit request ``rid`` of ``user`` for a slot of the "ollama" provider."""
    return await sched.submit(RequestSpec(rid, user, "ollama", priority=priority, **kw))


async def running(sched: RequestScheduler) -> list[str]:
    """The ids of the requests holding a slot (or storing their turn), in start order."""
    return [i.request_id for i in await sched.requests() if i.state == "running"]


async def state(sched: RequestScheduler, rid: str, user: str) -> str:
    return (await sched.status(rid, user)).state


async def position(sched: RequestScheduler, rid: str, user: str) -> int:
    return (await sched.status(rid, user)).position
