"""The SQLite store alone, in process: a turn's write (a new conversation and its two messages).

Two shapes, as the service writes them:

- ``--writers 1``: one write at a time with ~2 ms between them (a turn at c=1):
  each write's latency, p50 / p99 / max. A commit that runs a WAL checkpoint
  shows up here as the tail.
- ``--writers 32``: 32 tasks writing back to back (c=32): writes/s and the
  process's CPU per write. Writes that queue while a commit runs share the
  next one (group commit).

    python scripts/bench_store.py --writers 1 --writes 3000
    python scripts/bench_store.py --writers 32 --writes 4000
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.content import TextBlock  # noqa: E402
from service.store import NewMessage, SqliteStore  # noqa: E402
from service.store.rows import new_conversation_id  # noqa: E402

PAUSE_S = 0.002  # the rest of a turn, between two writes of one writer


def turn(i: int) -> list[NewMessage]:
    return [
        NewMessage(role="user", content=[TextBlock("hi")], request_id=f"r{i}"),
        NewMessage(
            role="assistant",
            content=[TextBlock("echo: hi")],
            provider="ollama",
            model="llama3.2",
            input_tokens=10,
            output_tokens=3,
            request_id=f"r{i}",
        ),
    ]


async def measure(writers: int, writes: int) -> str:
    with tempfile.TemporaryDirectory() as folder:
        async with SqliteStore(Path(folder) / "agent.db") as store:
            latencies: list[float] = []

            async def writer(first: int, pause_s: float) -> None:
                for i in range(first, writes, writers):
                    t0 = time.perf_counter()
                    await store.append_messages(
                        f"bench-{i % 32}", new_conversation_id(), turn(i), create=True
                    )
                    latencies.append((time.perf_counter() - t0) * 1e3)
                    if pause_s:
                        await asyncio.sleep(pause_s)

            pause_s = PAUSE_S if writers == 1 else 0.0
            await asyncio.gather(*(writer(w, pause_s) for w in range(writers)))  # warm-up
            latencies.clear()
            t0, cpu0 = time.perf_counter(), time.process_time()
            await asyncio.gather(*(writer(w, pause_s) for w in range(writers)))
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    ordered = sorted(latencies)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return (
        f"{writers} writer(s), {writes} writes: p50 {at(0.5):.3f} ms, p99 {at(0.99):.3f} ms, "
        f"max {ordered[-1]:.2f} ms; {writes / wall:.0f} writes/s (with pauses: {pause_s > 0}), "
        f"CPU {cpu / writes * 1e6:.0f} us/write"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--writers", type=int, default=1)
    parser.add_argument("--writes", type=int, default=3000)
    args = parser.parse_args()
    try:
        import uvloop  # the service's loop
    except ImportError:
        print(asyncio.run(measure(args.writers, args.writes)))
    else:
        print(uvloop.run(measure(args.writers, args.writes)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
