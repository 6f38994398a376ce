"""Garbage-collector pauses in the running stack under /api/chat load.

Starts the bench's fake Ollama, the real service and one gateway worker with
a ``sitecustomize`` on their PYTHONPATH that records every collection
(``gc.callbacks``: generation, duration, objects freed), drives ``/api/chat``
with ``--clients`` for ``--seconds``, and prints, per process, the
collections of each generation with their total and longest pause, and the
full collections one by one (their pauses grow with what the process keeps).

    python scripts/bench_gc.py --clients 32 --seconds 15
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench import stack_config  # noqa: E402
from bench_tools import LeanLoad, start_backend  # noqa: E402

from tests.e2e.stack import Stack  # noqa: E402

# Written into a folder put first on the children's PYTHONPATH.
PROBE = """
import gc, os, sys, time
_log = os.environ.get("BENCH_GC_LOG")
if _log:
    _out = open(os.path.join(_log, f"{os.getpid()}.log"), "w", buffering=1)
    _started = []

    def _probe(phase, info):
        if phase == "start":
            if _out.tell() == 0:  # by now runpy has set argv[0] to the module's path
                _out.write("argv " + " ".join(sys.argv) + "\\n")
            _started.append(time.perf_counter())
        elif _started:
            ms = (time.perf_counter() - _started.pop()) * 1e3
            _out.write(f"gc {time.time():.6f} {info['generation']} {ms:.3f} {info['collected']}\\n")

    gc.callbacks.append(_probe)
"""


def summary(log: Path, since: float, until: float) -> list[str]:
    """Per-process lines: collections by generation between ``since`` and ``until`` (wall)."""
    lines: list[str] = []
    for path in sorted(log.glob("*.log")):
        text = path.read_text().splitlines()
        argv = text[0] if text else ""
        who = next(
            (w for w in ("service", "gateway") if f"{w}.main" in argv or f"{w}/main" in argv), ""
        )
        if not who:
            continue
        by_gen: dict[int, list[float]] = defaultdict(list)
        full: list[str] = []
        for line in text[1:]:
            _, at, gen, ms, freed = line.split()
            if not since <= float(at) <= until:
                continue
            by_gen[int(gen)].append(float(ms))
            if gen == "2":
                full.append(f"{float(ms):.1f} ms ({freed} freed)")
        for gen in sorted(by_gen):
            pauses = by_gen[gen]
            lines.append(
                f"{who} gen{gen}: {len(pauses)} collections, {sum(pauses):.0f} ms in all, "
                f"longest {max(pauses):.1f} ms"
            )
        lines.append(f"{who} full collections in order: {', '.join(full) or 'none'}")
    return lines


async def drive(load: LeanLoad, clients: int, seconds: float) -> int:
    loop = asyncio.get_running_loop()
    done = 0
    stop_at = loop.time() + seconds

    async def worker(i: int) -> None:
        nonlocal done
        while loop.time() < stop_at:
            await load.gateway_chat(i)
            done += 1
            i += clients

    await asyncio.gather(*(worker(w) for w in range(clients)))
    return done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-gc-"))
    probe, log = workdir / "probe", workdir / "gc"
    probe.mkdir()
    log.mkdir()
    (probe / "sitecustomize.py").write_text(PROBE)
    path = f"{probe}:{ROOT}:{ROOT / 'generated'}"
    backend, url = start_backend(workdir / "backend.log")
    stack = Stack(workdir, stack_config(url), env={"PYTHONPATH": path, "BENCH_GC_LOG": str(log)})
    try:
        stack.start()

        async def run() -> tuple[int, float, float]:
            load = LeanLoad(url, stack.url, args.clients)
            try:
                await drive(load, 1, 2.0)  # warm-up; what start-up collects is not counted
                since = time.time()
                requests = await drive(load, args.clients, args.seconds)
                return requests, since, time.time()
            finally:
                await load.aclose()

        requests, since, until = asyncio.run(run())
    finally:
        stack.stop()
        backend.terminate()
        backend.wait(10)
    print(f"/api/chat at c={args.clients} for {args.seconds:g} s: {requests} requests")
    print("\n".join(summary(log, since, until)))
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
