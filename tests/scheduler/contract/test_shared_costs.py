"""What the shared queue's work does not grow with: watchers of positions, a full queue."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from service.errors import DeadlineExceeded, RequestCancelled
from service.scheduler import pg_dispatch
from service.scheduler.hosts import Host
from service.scheduler.interface import Position, RequestSpec
from service.scheduler.pg_estimates import board
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


class RowsSeen:
    """A connection whose ``fetch`` results are counted (what a dispatch read)."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self.largest = 0

    async def fetch(self, *args: Any) -> Any:
        rows = await self._conn.fetch(*args)
        self.largest = max(self.largest, len(rows))
        return rows

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


async def test_a_dispatch_with_every_slot_taken_reads_none_of_the_waiting_rows(
    pg: Backend,
) -> None:
    # Every submit, release and finish dispatches: with thousands waiting and the pool
    # full, a dispatch that read and walked every waiting row cost the whole queue
    # each time (O(waiting) per change, O(waiting^2) to fill the queue).
    sched = await pg.replica(slots={"ollama": 1}, max_pending=100, max_pending_per_user=100)
    grant = await sched.acquire(await submit(sched, "x", "running"))
    for n in range(40):
        await submit(sched, f"u{n}", f"w{n}", conversation_id=f"c{n}")
    seen: RowsSeen | None = None
    async with sched._locked() as conn:
        seen = RowsSeen(conn)
        done = await sched._dispatch(seen, notify=False)
    assert done.granted == 0
    assert seen.largest <= 1, seen.largest  # the running request's slot, no waiting row
    # A free slot: the dispatch reads the queue and grants the first in line.
    await sched.release(grant)
    await sched.finish("running", "x", "completed")
    assert (await sched.status("w0", "u0")).state == "running"


class Reads:
    """Counts the statements a board read sends."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self.count = 0

    async def fetch(self, *args: Any) -> Any:
        self.count += 1
        return await self._conn.fetch(*args)

    async def fetchval(self, *args: Any) -> Any:
        self.count += 1
        return await self._conn.fetchval(*args)


@pytest.mark.parametrize(
    ("inventories", "statements"),
    [
        # Health checks learned the same models on both hosts: one ranked read.
        ({"h1": ["m1", "m2"], "h2": ["m1", "m2"]}, 3),
        # Different models: one more pass over the provider's waiting rows, not one
        # count per watched request.
        ({"h1": ["m1"], "h2": ["m1", "m2"]}, 4),
    ],
)
async def test_a_board_read_costs_the_same_few_statements_for_any_number_watched(
    pg: Backend, inventories: dict[str, list[str]], statements: int
) -> None:
    hosts = {"ollama": [Host("h1", 1), Host("h2", 1)]}
    sched = await pg.replica("a", slots={}, hosts=hosts, max_pending=100, max_pending_per_user=100)
    for name, models in inventories.items():
        await sched.report_host("ollama", name, up=True, models=models)
    for n in range(40):
        model = "m2" if n % 3 == 0 else "m1"
        await sched.submit(RequestSpec(f"r{n}", f"u{n % 7}", "ollama", model=model))
    keys = [(f"u{n % 7}", f"r{n}") for n in range(40)]
    async with sched._pool.acquire() as conn:
        reads = Reads(conn)
        found = await board(reads, keys, sched._hosts, sched._clock(), 10.0)
    assert reads.count == statements
    # The same figures as each request's status, which counts row by row.
    waiting = [k for k in keys if (await sched.status(k[1], k[0])).state == "queued"]
    assert sorted(found) == sorted(waiting)
    for user, rid in waiting:
        info = await sched.status(rid, user)
        assert found[(user, rid)] == (info.position, pytest.approx(info.estimated_wait_s)), rid


async def test_a_dispatch_finds_the_one_runnable_request_far_down_the_queue(pg: Backend) -> None:
    # A dispatch reads the first few waiting rows of a lane with a free slot; when none of
    # them can use it (here: the free host does not serve their model), it must read on.
    hosts = {"ollama": [Host("h1", 1), Host("h2", 1)]}
    sched = await pg.replica("a", slots={}, hosts=hosts, max_pending=100, max_pending_per_user=100)
    await sched.report_host("ollama", "h1", up=True, models=["m1"])
    await sched.report_host("ollama", "h2", up=True, models=["m2"])
    assert (await sched.submit(RequestSpec("busy", "x", "ollama", model="m2"))).granted
    for n in range(60):  # more than a first read takes, none of them runnable on h1
        await sched.submit(RequestSpec(f"m2-{n}", f"u{n}", "ollama", model="m2"))
    late = await sched.submit(RequestSpec("m1-late", "late", "ollama", model="m1"))
    assert late.granted or (await sched.status("m1-late", "late")).state == "running"
    assert (await sched.status("m2-0", "u0")).state == "queued"


async def test_the_waiting_counter_of_the_queue_cap_matches_the_rows(pg: Backend) -> None:
    # The queue cap reads a counter kept by triggers instead of counting the waiting
    # rows at each admission; every way into and out of the queue must keep it exact.
    sched = await pg.replica(slots={"ollama": 2}, max_pending=100, max_pending_per_user=100)

    async def agree() -> None:
        rows = await pg.sql(
            "SELECT (SELECT waiting FROM sched_counts) AS kept,"
            " (SELECT count(*) FROM sched_requests WHERE state = 'queued') AS real"
        )
        assert rows[0]["kept"] == rows[0]["real"], dict(rows[0])

    admissions = [await submit(sched, f"u{n % 4}", f"r{n}") for n in range(12)]
    await agree()
    first = await sched.acquire(admissions[0])  # granted at once: two slots
    second = await sched.acquire(admissions[1])
    await sched.cancel("r5", "u1")  # a waiting one cancelled
    await agree()
    await sched.put_back(first)  # back to the front of the queue
    await agree()
    with pytest.raises(DeadlineExceeded):  # a queue-wait deadline ends a waiting one
        await sched.acquire(admissions[9], timeout=0.01)
    await agree()
    await sched.release(second)
    await sched.finish("r1", "u1", "completed")  # its slot goes to the next in line
    await agree()
    assert (await sched.stats()).total_waiting == (
        await pg.sql("SELECT count(*) AS n FROM sched_requests WHERE state = 'queued'")
    )[0]["n"]


async def test_the_waiting_counter_survives_a_truncate_and_another_search_path(
    pg: Backend,
) -> None:
    sched = await pg.replica(slots={"ollama": 1}, max_pending=3, max_pending_per_user=10)
    for n in range(4):
        await submit(sched, f"u{n}", f"r{n}")  # one runs, three wait: the cap
    # A schema-qualified write from a session whose search path is elsewhere.
    conn = await asyncpg.connect(pg.url)
    try:
        await conn.execute(f'DELETE FROM "{pg.schema}".sched_requests WHERE request_id = $1', "r3")
    finally:
        await conn.close()
    counted = "SELECT (SELECT waiting FROM sched_counts) AS kept," + (
        " (SELECT count(*) FROM sched_requests WHERE state = 'queued') AS real"
    )
    rows = await pg.sql(counted)
    assert rows[0]["kept"] == rows[0]["real"] == 2, dict(rows[0])
    await pg.sql("TRUNCATE sched_requests")  # an operator empties the queue
    rows = await pg.sql(counted)
    assert rows[0]["kept"] == rows[0]["real"] == 0, dict(rows[0])
    await submit(sched, "x", "x0")  # takes the free slot
    for n in range(3):  # and three may wait again: the cap is not stuck at "full"
        await submit(sched, f"y{n}", f"y{n}")


async def test_a_request_put_back_and_then_cancelled_elsewhere_wakes_its_waiter_at_once(
    pg: Backend,
) -> None:
    # The waiter's replica polls rarely: only the scan after a change can wake it in time.
    hosts = {"ollama": [Host("h1", 1), Host("h2", 1)]}
    a = await pg.replica("a", slots={}, hosts=hosts, poll_s=3600)
    b = await pg.replica("b", slots={}, hosts=hosts)
    first = await submit(a, "u1", "r1")
    grant = await a.acquire(first)
    await a.acquire(await submit(a, "u2", "r2"))
    await a.report_host("ollama", grant.backend, up=False)
    await a.put_back(grant)  # the other host is busy: r1 waits again
    waiter = asyncio.create_task(a.acquire(first))
    await until(lambda: ("u1", "r1") in a._waiters)
    await b.cancel("r1", "u1")
    with pytest.raises(RequestCancelled):
        await asyncio.wait_for(waiter, 10)


async def test_a_free_slot_in_one_lane_does_not_make_another_lanes_dispatch_read_all(
    pg: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    sched = await pg.replica(
        slots={"ollama": 1, "other": 2}, max_pending=500, max_pending_per_user=500
    )
    grant = await sched.acquire(await submit(sched, "u", "r0"))
    for n in range(1, 120):
        await submit(sched, "u", f"r{n}")
    limits: list[int | None] = []
    real = pg_dispatch._waiting

    async def spy(conn: Any, lane: str, limit: int | None) -> list[Any]:
        limits.append(limit)
        return await real(conn, lane, limit)

    monkeypatch.setattr(pg_dispatch, "_waiting", spy)
    await sched.release(grant)  # one slot frees in the long lane; "other" sits idle
    assert limits and None not in limits, limits
    assert (await sched.status("r1", "u")).state == "running"
