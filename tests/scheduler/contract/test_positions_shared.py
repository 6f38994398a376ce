"""Position reports of the shared queue: one read per change for all of a replica's watchers."""

from __future__ import annotations

import asyncio

import pytest

from service.scheduler.interface import Position
from tests.query_counter import QueryCounter
from tests.scheduler.contract.conftest import Backend, submit, until

pytestmark = pytest.mark.postgres

WATCHERS = 30


async def test_a_change_costs_a_few_statements_not_some_per_watcher(pg: Backend) -> None:
    statements = QueryCounter()
    # No safety poll in the way: only the change below makes the watchers look again.
    sched = await pg.replica(
        slots={"ollama": 1},
        max_pending=100,
        max_pending_per_user=100,
        poll_s=3600,
        on_connect=statements.attach,
    )
    blocker = await submit(sched, "x", "blocker")
    grant = await sched.acquire(blocker)
    latest: dict[int, Position] = {}

    admissions = [await submit(sched, f"u{n}", f"w{n}") for n in range(WATCHERS)]

    async def watch(n: int) -> None:
        async for update in sched.positions(admissions[n], min_interval_s=0.0):
            latest[n] = update

    def aheads(watchers: range) -> list[int]:
        return [latest[n].ahead if n in latest else -1 for n in watchers]

    tasks = [asyncio.create_task(watch(n)) for n in range(WATCHERS)]
    try:
        await until(lambda: aheads(range(WATCHERS)) == list(range(WATCHERS)))
        before = statements.count
        await sched.release(grant)  # one change: w0 gets the slot, everyone moves up one
        await sched.finish("blocker", "x", "completed")
        await until(lambda: aheads(range(1, WATCHERS)) == list(range(WATCHERS - 1)))
        spent = statements.count - before
        # Read watcher by watcher, this change cost 360 statements (four per watcher and
        # look: its row, a count over the queue, two for the estimate); shared, about 31,
        # most of them the release and finish themselves.
        assert spent < 2 * WATCHERS, spent
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
