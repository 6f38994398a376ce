"""The c=1 tail of /api/chat with thousands of samples (the quick bench's c=1 has 300).

Starts the bench's fake Ollama, the real service and one gateway worker,
sends ``/api/chat`` one request at a time for ``--seconds`` with the lean
HTTP/1.1 client, and prints p50, p99 and p99.9 as ratios to the p50, the
longest request, and the share of requests slower than 3x the p50.

    python scripts/bench_tail.py --seconds 15
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench import stack_config  # noqa: E402
from bench_tools import LeanLoad, start_backend  # noqa: E402

from tests.e2e.stack import Stack  # noqa: E402

WARM_UP = 200


async def sequential(load: LeanLoad, seconds: float) -> list[float]:
    for i in range(WARM_UP):
        await load.gateway_chat(i)
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < stop_at:
        t0 = time.perf_counter()
        await load.gateway_chat(i)
        latencies.append((time.perf_counter() - t0) * 1e3)
        i += 1
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-tail-"))
    backend, url = start_backend(workdir / "backend.log")
    stack = Stack(workdir, stack_config(url))
    try:
        stack.start()

        async def run() -> list[float]:
            load = LeanLoad(url, stack.url, 1)
            try:
                return await sequential(load, args.seconds)
            finally:
                await load.aclose()

        try:
            import uvloop
        except ImportError:
            latencies = asyncio.run(run())
        else:
            latencies = uvloop.run(run())
    finally:
        stack.stop()
        backend.terminate()
        backend.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    ordered = sorted(latencies)
    n = len(ordered)
    p50, p99, p999 = (ordered[min(n - 1, int(q * n))] for q in (0.5, 0.99, 0.999))
    slow = sum(1 for x in ordered if x > 3 * p50) / n
    print(
        f"/api/chat at c=1, {n} requests: p50 {p50:.2f} ms, p99 {p99:.2f} ms ({p99 / p50:.2f}x),"
        f" p99.9 {p999:.2f} ms ({p999 / p50:.2f}x), max {ordered[-1]:.1f} ms;"
        f" slower than 3x the p50: {slow:.2%}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
