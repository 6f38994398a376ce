"""The `waiting` scenario: many streams opened at once against few slots (issue 23's shape).

Starts the bench's fake Ollama and the real service and gateway with a
64-slot Ollama (``--slots``), opens ``--streams`` SSE streams within a few
seconds, each a turn of 0.4 s (5 tokens 100 ms apart, the first at once), and reads them all to
their end. It prints, as the issue's targets ask, ratios and figures of this
one run:

- every stream's terminal events (exactly one ``done`` or ``error`` each);
- gateway + service RSS growth per open stream at the peak;
- the first event (``queued`` or ``start``) per stream: p50 / p99;
- the drain time against the ideal (streams / slots x turn time);
- service CPU per dispatched turn.

    python scripts/bench_waiting.py --streams 2000      # about a minute here

With ``--scheduler postgres`` the queue is the shared one (PostgreSQL at
AGENT_TEST_POSTGRES_URL, a schema of its own, dropped afterwards), and the run
also prints the rows of the queue's tables the database read per turn.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import asyncpg  # noqa: E402
from bench import start_floor  # noqa: E402
from bench_tools import RawHttp, chat_body, cpu_s, rss_kib, start_backend  # noqa: E402

from tests.e2e.stack import launch  # noqa: E402

TOKENS, DELAY_MS = 5, 100  # the backend sends the first token at once: a 0.4 s turn
TURN_S = (TOKENS - 1) * DELAY_MS / 1000


async def run(gateway_url: str, streams: int, open_s: float, pids: dict[str, int]) -> dict:
    gateway = RawHttp.for_url(gateway_url, "/api/chat/stream", 0)
    message = f"tokens={TOKENS} delay_ms={DELAY_MS}"
    before = {name: rss_kib(pid) for name, pid in pids.items()}
    peak = dict(before)
    terminals: list[list[str]] = [[] for _ in range(streams)]
    first_event_ms: list[float] = []
    queued_events = 0

    open_now = open_peak = 0

    async def one(i: int) -> None:
        nonlocal queued_events, open_now, open_peak
        await asyncio.sleep(open_s * i / streams)  # opened evenly within open_s
        open_now += 1
        open_peak = max(open_peak, open_now)
        try:
            await read(i)
        finally:
            open_now -= 1

    async def read(i: int) -> None:
        nonlocal queued_events
        t0 = time.perf_counter()
        first = True
        request = gateway.request(chat_body(message, f"wait-{i % 500}"))
        try:
            async for line in gateway.lines(request):
                if line.startswith("HTTP "):
                    terminals[i].append(line)
                    return
                if line.startswith("data:") and terminals[i] == ["error"]:
                    found = re.search(r'"code":"(\w+)"', line)
                    terminals[i] = [f"error:{found[1] if found else '?'}"]
                    continue
                if not line.startswith("event:"):
                    continue
                event = line[6:].strip()
                if first and event in ("queued", "start"):
                    first_event_ms.append((time.perf_counter() - t0) * 1e3)
                    first = False
                if event == "queued":
                    queued_events += 1
                if event in ("done", "error"):
                    terminals[i].append(event)
        except Exception as exc:
            terminals[i].append(type(exc).__name__)

    async def sample() -> None:
        while True:
            for name, pid in pids.items():
                peak[name] = max(peak[name], rss_kib(pid))
            await asyncio.sleep(0.2)

    sampler = asyncio.create_task(sample())
    cpu0 = cpu_s(pids["service"])
    gateway_cpu0 = cpu_s(pids["gateway"])
    client_cpu0 = time.process_time()
    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(streams)))
    drained = time.perf_counter() - t0
    service_cpu = cpu_s(pids["service"]) - cpu0
    gateway_cpu = cpu_s(pids["gateway"]) - gateway_cpu0
    client_cpu = time.process_time() - client_cpu0
    sampler.cancel()
    growth = {n: peak[n] - before[n] for n in ("gateway", "service")}
    ok = sum(1 for t in terminals if len(t) == 1 and t[0] == "done")
    return {
        "exactly_one_done": ok,
        "other_endings": sorted({",".join(t) or "none" for t in terminals if t != ["done"]}),
        # Peak RSS growth over the most streams open at once (some end while others open).
        "open_peak": open_peak,
        "kib_per_stream": sum(growth.values()) / max(open_peak, 1),
        "gateway_kib_per_stream": growth["gateway"] / max(open_peak, 1),
        "service_kib_per_stream": growth["service"] / max(open_peak, 1),
        "first_event_p50_ms": statistics.median(first_event_ms) if first_event_ms else 0.0,
        "first_event_p99_ms": sorted(first_event_ms)[int(len(first_event_ms) * 0.99) - 1]
        if first_event_ms
        else 0.0,
        "drain_s": drained,
        "service_cpu_ms_per_turn": service_cpu * 1e3 / streams,
        "gateway_cpu_ms_per_turn": gateway_cpu * 1e3 / streams,
        "client_cpu_ms_per_turn": client_cpu * 1e3 / streams,
        "queued_events_per_stream": queued_events / streams,
    }


async def floor_streams(url: str, streams: int, pids: list[int]) -> float:
    """RSS growth per open stream of the floor probes: ``streams`` held open at once."""
    gateway = RawHttp.for_url(url, "/api/chat/stream", 0)
    request = gateway.request(chat_body("hi", "floor"))
    before = sum(rss_kib(pid) for pid in pids)
    opened = 0
    all_open = asyncio.Event()
    release = asyncio.Event()

    async def hold() -> None:
        nonlocal opened
        async for line in gateway.lines(request):
            if line.startswith("event:"):
                opened += 1
                if opened == streams:
                    all_open.set()
                await release.wait()
                return

    holders = [asyncio.create_task(hold()) for _ in range(streams)]
    await asyncio.wait_for(all_open.wait(), 120)
    await asyncio.sleep(1.0)  # let both processes settle before reading their RSS
    growth = sum(rss_kib(pid) for pid in pids) - before
    release.set()
    await asyncio.gather(*holders, return_exceptions=True)
    return growth / streams


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--slots", type=int, default=64)
    parser.add_argument("--open-s", type=float, default=5.0, help="open all streams within this")
    parser.add_argument("--log-level", default="warning", help="the stack's log level")
    parser.add_argument("--scheduler", choices=("memory", "postgres"), default="memory")
    args = parser.parse_args()
    database = os.environ.get("AGENT_TEST_POSTGRES_URL", "")
    if args.scheduler == "postgres" and not database:
        print("--scheduler postgres needs AGENT_TEST_POSTGRES_URL", file=sys.stderr)
        return 2
    schema = f"bench_waiting_{os.getpid()}"
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4 * args.streams + 1024), hard))
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
        procs, _grpc, floor_url = start_floor(Path(tmp))
        try:
            floor_kib = asyncio.run(
                floor_streams(floor_url, min(args.streams, 5000), [p.pid for p in procs])
            )
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(10)
    backend, url = start_backend()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-waiting-") as tmp:
            config = {
                "api": {"provider": "ollama"},
                "ollama": {"url": url, "model": "llama3.2", "parallel": args.slots},
                "queue": {
                    "max_pending": args.streams,
                    "max_pending_per_user": args.streams,
                    "position_interval_s": 1.0,  # the documented default, not the tests' 0.2
                },
                "api_server": {"log_level": args.log_level},
            }
            if args.scheduler == "postgres":
                joiner = "&" if "?" in database else "?"
                config["store"] = {"url": f"{database}{joiner}schema={schema}"}
                config["scheduler"] = {"backend": "postgres"}
            stack = launch(Path(os.environ.get("BENCH_WAITING_DIR") or tmp), config)
            try:
                assert stack.service is not None and stack.gateway is not None
                assert stack.service.popen is not None and stack.gateway.popen is not None
                pids = {"service": stack.service.popen.pid, "gateway": stack.gateway.popen.pid}
                figures = asyncio.run(run(stack.url, args.streams, args.open_s, pids))
            finally:
                stack.stop()
            if args.scheduler == "postgres":
                figures["queue_rows_read"] = asyncio.run(queue_rows_read(database, schema))
    finally:
        backend.terminate()
        backend.wait(10)
    ideal = args.streams / args.slots * TURN_S
    print(
        f"\nwaiting: {args.streams} streams opened within {args.open_s:g} s, {args.slots} slots,"
        f" {args.scheduler} queue"
    )
    print(
        f"  exactly one done: {figures['exactly_one_done']} of {args.streams}"
        f"  other endings: {figures['other_endings'] or 'none'}"
    )
    print(
        f"  gateway + service RSS growth: {figures['kib_per_stream']:.0f} KiB per open stream"
        f" (gateway {figures['gateway_kib_per_stream']:.0f}, service"
        f" {figures['service_kib_per_stream']:.0f}; {figures['open_peak']} open at most;"
        " target <= 40)"
    )
    print(
        f"  floor (bare grpc.aio stream + bare FastAPI SSE route, {min(args.streams, 5000)} open):"
        f" {floor_kib:.0f} KiB per open stream; ours is"
        f" {figures['kib_per_stream'] / max(floor_kib, 1e-9):.2f}x the floor"
    )
    print(
        f"  first event: p50 {figures['first_event_p50_ms']:.0f} ms,"
        f" p99 {figures['first_event_p99_ms']:.0f} ms (target p99 <= 1000)"
    )
    print(
        f"  drain: {figures['drain_s']:.1f} s against the ideal {ideal:.1f} s"
        f" = {figures['drain_s'] / ideal:.2f}x (target <= 1.2x; includes the opening)"
    )
    print(
        f"  service CPU per dispatched turn: {figures['service_cpu_ms_per_turn']:.2f} ms"
        f" (gateway {figures['gateway_cpu_ms_per_turn']:.2f} ms, this load generator"
        f" {figures['client_cpu_ms_per_turn']:.2f} ms);"
        f" queued events per stream: {figures['queued_events_per_stream']:.1f}"
    )
    if "queue_rows_read" in figures:
        tables = figures["queue_rows_read"]
        top = ", ".join(f"{name} {read / args.streams:,.0f}" for name, read in tables.items())
        print(
            "  the database read"
            f" {sum(tables.values()) / args.streams:,.0f} rows of the queue's tables per turn"
            f" ({top}; pg_stat_user_tables: sequential + index tuples)"
        )
    return 0


async def queue_rows_read(database: str, schema: str) -> dict[str, float]:
    """Rows of the sched_* tables the database read in the run; then the schema is dropped."""
    conn = await asyncpg.connect(database)
    try:
        await asyncio.sleep(2.0)  # the service's backends exit and flush their counts
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        rows = await conn.fetch(
            "SELECT relname, coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) AS read"
            " FROM pg_stat_user_tables WHERE schemaname = $1 AND relname LIKE 'sched%'"
            " ORDER BY 2 DESC",
            schema,
        )
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()
    return {r["relname"]: float(r["read"]) for r in rows}


if __name__ == "__main__":
    raise SystemExit(main())
