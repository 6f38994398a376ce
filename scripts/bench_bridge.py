"""Client CPU per Ollama call, in process: OllamaBridge.stream against the bench backend.

Starts ``scripts/bench_backend.py`` (a microsecond fake Ollama) and streams the
canned answer ``--calls`` times per round, ``--concurrency`` at a time, on uvloop.
Prints the process CPU per call of each round and the best round: the bridge's
own cost (payload, HTTP client, NDJSON parsing), with no gRPC or store around it.
It asserts nothing; compare figures only within one run or one quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.bench_tools import start_backend  # noqa: E402
from service.content import Message, TextBlock  # noqa: E402
from service.providers.base import CompletionRequest  # noqa: E402
from service.providers.ollama import OllamaBridge  # noqa: E402


async def one_round(bridge: OllamaBridge, calls: int, concurrency: int) -> float:
    """CPU seconds of this process per call, over ``calls`` streamed calls."""
    request = CompletionRequest(
        messages=[Message(role="user", content=[TextBlock(text="hi")])], max_tokens=64
    )
    left = iter(range(calls))

    async def worker() -> None:
        for _ in left:
            async for _event in bridge.stream(request):
                pass

    start = time.process_time()
    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    return (time.process_time() - start) / calls


async def run(url: str, calls: int, rounds: int, concurrency: int) -> None:
    bridge = OllamaBridge(url=url, model="llama3.2", max_connections=max(8, concurrency + 4))
    try:
        await one_round(bridge, min(calls, 200), concurrency)  # warm: connections, caches
        results = []
        for i in range(rounds):
            per_call = await one_round(bridge, calls, concurrency)
            results.append(per_call)
            print(f"round {i + 1}: {per_call * 1e6:.0f} µs CPU per call", flush=True)
        print(f"best of {rounds} x {calls} calls at c={concurrency}: {min(results) * 1e6:.0f} µs")
    finally:
        await bridge.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=1)
    args = parser.parse_args()
    workdir = ROOT / "build"
    workdir.mkdir(exist_ok=True)
    backend, url = start_backend(workdir / "backend.log")
    try:
        import uvloop

        uvloop.run(run(url, args.calls, args.rounds, args.concurrency))
    finally:
        backend.terminate()
        with contextlib.suppress(Exception):
            backend.wait(timeout=5)


if __name__ == "__main__":
    main()
