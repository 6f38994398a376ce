"""What a shared queue costs end to end: requests/s through one gateway over 1, 2 and 3 replicas.

Against the bench's microsecond fake Ollama (scripts/bench_backend.py), 32
clients send ``/api/chat`` back to back through one gateway worker for a
fixed time, over: one service with the in-process queue (the baseline of
this run, SQLite store), then 1, 2 and 3 replicas sharing one PostgreSQL
queue (store and queue in a schema of their own, dropped afterwards). Every
figure is a ratio to the baseline measured in the same run; the machine is
shared and noisy. It only prints.

    AGENT_TEST_POSTGRES_URL=postgresql://... python scripts/bench_replicas.py [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import asyncpg  # noqa: E402
from bench_tools import RawHttp, chat_body, start_backend  # noqa: E402

from tests.e2e.replicas import POSTGRES_URL, Replicas  # noqa: E402
from tests.e2e.stack import launch  # noqa: E402

CLIENTS = 32


def config(backend_url: str) -> dict[str, Any]:
    return {
        "api": {"provider": "ollama"},
        "ollama": {"url": backend_url, "model": "llama3.2", "parallel": 64},
        "queue": {"max_pending": 5000, "max_pending_per_user": 5000},
        "api_server": {"log_level": "warning"},
    }


async def drive(url: str, seconds: float) -> dict[str, float]:
    """CLIENTS senders back to back: warm up 1 s, then count for ``seconds``."""
    http = RawHttp.for_url(url, "/api/chat", CLIENTS)
    requests = [http.request(chat_body("hi", f"bench-{u}")) for u in range(CLIENTS)]
    loop = asyncio.get_running_loop()
    start = loop.time() + 1.0
    stop = start + seconds
    done = errors = 0

    answered = 0  # every 200, warm-up included: the database saw all of them

    async def worker(w: int) -> None:
        nonlocal done, errors, answered
        while loop.time() < stop:
            status, _ = await http.post(w, requests[w])
            answered += status == 200
            if loop.time() >= start:
                if status == 200:
                    done += 1
                else:
                    errors += 1

    await asyncio.gather(*(worker(w) for w in range(CLIENTS)))
    await http.aclose()
    return {"rps": done / seconds, "errors": errors, "turns": answered}


async def table_work(schema: str) -> dict[str, tuple[int, int]]:
    """Per table of ``schema``: (scans, rows written) from PostgreSQL's own statistics.

    Read after the replicas stopped: a backend flushes its counts when it exits,
    and the schema is private to the run, so nothing else is counted.
    """
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await asyncio.sleep(2.0)  # the replicas' backends exit and flush their counts
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        rows = await conn.fetch(
            "SELECT relname, coalesce(seq_scan, 0) + coalesce(idx_scan, 0) AS scans,"
            " n_tup_ins + n_tup_upd + n_tup_del AS written"
            " FROM pg_stat_user_tables WHERE schemaname = $1",
            schema,
        )
    finally:
        await conn.close()
    return {r["relname"]: (r["scans"], r["written"]) for r in rows}


def per_turn(work: dict[str, tuple[int, int]], turns: float) -> dict[str, float]:
    """Scans and row writes per turn, the queue's tables (sched_*) apart from the store's."""
    figures = {"queue_scans": 0.0, "queue_writes": 0.0, "store_scans": 0.0, "store_writes": 0.0}
    for table, (scans, written) in work.items():
        side = "queue" if table.startswith("sched_") else "store"
        figures[f"{side}_scans"] += scans / turns
        figures[f"{side}_writes"] += written / turns
    return figures


async def drop_schema(schema: str) -> None:
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    if not POSTGRES_URL:
        print("AGENT_TEST_POSTGRES_URL is not set: no shared-queue figures")
        return 0
    backend, url = start_backend()
    results: dict[str, dict[str, float]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            stack = launch(Path(tmp) / "memory", config(url))
            try:
                results["in-process queue, 1 service"] = asyncio.run(drive(stack.url, args.seconds))
            finally:
                stack.stop()
            for count in (1, 2, 3):
                replicas = Replicas(Path(tmp) / f"pg{count}", config(url), count=count)
                try:
                    replicas.start()
                    label = f"shared queue, {count} replica{'s' if count > 1 else ''}"
                    results[label] = asyncio.run(drive(replicas.url, args.seconds))
                finally:
                    replicas.stop()
                    try:
                        if label in results and results[label]["turns"]:
                            work = asyncio.run(table_work(replicas.schema))
                            results[label] |= per_turn(work, results[label]["turns"])
                    finally:
                        asyncio.run(drop_schema(replicas.schema))
    finally:
        backend.terminate()
        backend.wait(10)
    base = results["in-process queue, 1 service"]["rps"]
    print(f"\n/api/chat, {CLIENTS} clients, one gateway worker, {args.seconds:g} s each")
    print(f"  (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    for label, figures in results.items():
        ratio = figures["rps"] / base if base else 0.0
        print(
            f"  {label:32s} {figures['rps']:7.0f} req/s  {ratio:5.2f}x the in-process queue"
            f"  errors {figures['errors']:.0f}"
        )
    print("\nthe database's work per turn (pg_stat_user_tables of the run's own schema)")
    print("  table scans (index or sequential) and rows written; queue = sched_*, store = the rest")
    for label, figures in results.items():
        if "queue_scans" in figures:
            print(
                f"  {label:32s} queue {figures['queue_scans']:5.1f} scans"
                f" {figures['queue_writes']:4.1f} writes   store {figures['store_scans']:5.1f}"
                f" scans {figures['store_writes']:4.1f} writes"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
