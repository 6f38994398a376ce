"""Measure what a shared queue costs: the scheduler alone, in-process vs PostgreSQL.

For each backend (the in-process engine; PostgreSQL with one replica; with two
replicas sharing the queue) it runs no-op turns over ``--slots`` slots; a turn
is submit -> acquire -> release -> finish. First one client alone: the
admission -> grant latency on a free slot (p50/p99). Then ``--turns`` turns
from ``--clients`` concurrent clients: turns per second, and for PostgreSQL
the statements sent per turn (counted on every pooled connection). It only
prints.

    AGENT_TEST_POSTGRES_URL=postgresql://... python scripts/bench_scheduler.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from service.scheduler import Scheduler  # noqa: E402
from service.scheduler.interface import RequestScheduler, RequestSpec  # noqa: E402
from service.scheduler.memory import MemoryScheduler  # noqa: E402
from service.scheduler.postgres import PostgresScheduler  # noqa: E402
from tests.query_counter import QueryCounter  # noqa: E402


async def drive(
    replicas: list[RequestScheduler], turns: int, clients: int, tag: str
) -> dict[str, float]:
    free_grants: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(turns):
        queue.put_nowait(n)

    async def client(c: int) -> None:
        while not queue.empty():
            n = queue.get_nowait()
            sched = replicas[n % len(replicas)]
            started = time.perf_counter()
            admission = await sched.submit(RequestSpec(f"{tag}{n}", f"user{c}", "ollama"))
            grant = await sched.acquire(admission)
            free_grants.append(time.perf_counter() - started)
            await sched.release(grant)
            await sched.finish(admission.request_id, admission.user_id, "completed")

    began = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(clients)))
    elapsed = time.perf_counter() - began
    if clients > 1:
        return {"turns_per_s": turns / elapsed}
    cuts = statistics.quantiles(free_grants, n=100)
    return {"grant_p50_ms": cuts[49] * 1000, "grant_p99_ms": cuts[98] * 1000}


async def both(replicas: list[RequestScheduler], turns: int, clients: int) -> dict[str, float]:
    """Latency on a free slot (one client), then throughput (many)."""
    return await drive(replicas, 100, 1, "s") | await drive(replicas, turns, clients, "c")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=400)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--slots", type=int, default=4)
    args = parser.parse_args()
    caps = {"max_pending": 10_000, "max_pending_per_user": 10_000}
    slots = {"ollama": args.slots}

    memory = MemoryScheduler(Scheduler(slots=slots, **caps))
    print("memory     ", _fmt(await both([memory], args.turns, args.clients)))

    url = os.environ.get("AGENT_TEST_POSTGRES_URL", "")
    if not url:
        print("postgres    skipped: AGENT_TEST_POSTGRES_URL is not set")
        return 0
    for count in (1, 2):
        schema = "bench_" + secrets.token_hex(6)
        counter = QueryCounter()
        replicas = [
            PostgresScheduler(
                url,
                slots=slots,
                schema=schema,
                replica_id=f"bench-{i}",
                on_connect=counter.attach,
                **caps,
            )
            for i in range(count)
        ]
        try:
            for replica in replicas:
                await replica.open()
            before = counter.count
            figures = await drive(list(replicas), 100, 1, "s")
            middle = counter.count
            figures |= await drive(list(replicas), args.turns, args.clients, "c")
            figures["statements_per_turn"] = (counter.count - middle) / args.turns
            figures["alone_statements_per_turn"] = (middle - before) / 100
            print(f"postgres x{count}", _fmt(figures))
        finally:
            for replica in replicas:
                await replica.close()
            conn = await asyncpg.connect(url)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                await conn.close()
    return 0


def _fmt(figures: dict[str, float]) -> str:
    return "  ".join(f"{k}={v:.1f}" for k, v in figures.items())


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
