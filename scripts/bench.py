"""`make bench`: measure the stack against the speed budget (DESIGN §6) and print figures.

Starts the fast fake Ollama (scripts/bench_backend.py), then the real service
and one gateway worker (tests/e2e/stack.py), and drives them from this
process, which is the only load generator. Every figure sits next to a
baseline taken in the same run (the same client straight at the backend),
because this machine is noisy. It only prints; it asserts nothing.

Chat turns use ``new_conversation: true`` so every turn reads and writes a
fresh conversation in the store instead of a history that grows with the run.
Raw figures go to build/bench.json. Then the cache-warm conversation
scenario (scripts/bench_cache.py; ``--cache-only`` runs just that one).
``--chat-only`` runs only the single-request path of ``/api/chat`` (the floor
probes, c=1 and c=32) and prints its ratios to the floor; with ``--quick``
it takes about 25 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import bench_cache  # noqa: E402
import grpc  # noqa: E402
import httpx  # noqa: E402
from bench_floor import FloorClients  # noqa: E402
from bench_jwt import jwt_figures, jwt_report, jwt_verdicts  # noqa: E402
from bench_phases import load, long_conversation, many_streams, sequential, streaming  # noqa: E402
from bench_report import chat_report, report, verdicts  # noqa: E402
from bench_tools import BIG_STREAMS, QUICK, Clients, LeanLoad, Plan, start_backend  # noqa: E402

from tests.e2e.stack import Stack, free_port  # noqa: E402

# --- the stack -----------------------------------------------------------------


def start_floor(workdir: Path) -> tuple[list[subprocess.Popen[bytes]], str, str]:
    """The two floor processes (scripts/bench_floor.py): the gRPC echo and the bare route."""
    grpc_port, http_port = free_port(), free_port()
    procs = []
    for kind, extra in (("grpc", []), ("http", ["--grpc", f"127.0.0.1:{grpc_port}"])):
        port = grpc_port if kind == "grpc" else http_port
        log = (workdir / f"floor-{kind}.log").open("wb")
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "scripts" / "bench_floor.py"),
                    kind,
                    "--port",
                    str(port),
                    *extra,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        log.close()
    url = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            body = {"message": "hi", "user_id": "probe"}
            if httpx.post(f"{url}/api/chat", json=body, timeout=0.5).status_code == 200:
                return procs, f"127.0.0.1:{grpc_port}", url
        except httpx.HTTPError:
            time.sleep(0.05)
    for proc in procs:
        proc.kill()
    raise RuntimeError("the floor probes did not start")


def stack_config(backend_url: str) -> dict[str, Any]:
    # parallel covers the 1,000 streams, so the queue never limits a measurement.
    return {
        "api": {"provider": "ollama"},
        "ollama": {"url": backend_url, "model": "llama3.2", "parallel": 1024},
        "queue": {"max_pending": 5000, "max_pending_per_user": 5000},
        "api_server": {"log_level": "warning"},
    }


def calibration_us() -> float:
    """A fixed pure-Python workload (JSON round trips), best of 5: how fast this box runs Python."""
    doc = {"model": "llama3.2", "message": {"role": "assistant", "content": "Hello"}, "done": False}
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(1000):
            json.loads(json.dumps(doc))
        best = min(best, time.perf_counter() - t0)
    return best * 1e6 / 1000


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import uvloop

        uvloop_version = uvloop.__version__
    except ImportError:
        uvloop_version = "not installed"
    return {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "cpu": model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "grpcio": grpc.__version__,
        "httpx": httpx.__version__,
        "uvloop": uvloop_version,
        "loadavg_at_start": os.getloadavg(),
        "json_round_trip_us": calibration_us(),
    }


async def measure(
    plan: Plan,
    backend_url: str,
    backend_pid: int,
    stack: Stack,
    floor: tuple[list[subprocess.Popen[bytes]], str, str],
    *,
    chat_only: bool = False,
) -> dict[str, Any]:
    assert stack.service and stack.service.popen and stack.gateway and stack.gateway.popen
    servers = {
        "gateway": stack.gateway.popen.pid,
        "service": stack.service.popen.pid,
        "backend": backend_pid,
    }
    pids = {**servers, "client": os.getpid()}
    floor_procs, floor_grpc, floor_url = floor
    floor_pids = {
        "floor_route": floor_procs[1].pid,
        "floor_echo": floor_procs[0].pid,
        "client": os.getpid(),
    }
    clients = Clients(backend_url, stack, connections=2 * plan.load_clients)
    floors = FloorClients(floor_grpc, floor_url, connections=2 * plan.load_clients)
    results: dict[str, Any] = {}
    try:
        step("floor probes: bare grpc.aio echo, bare FastAPI route")
        results["floor"] = {
            "sequential": {
                "grpc": await sequential(
                    floors.grpc_chat, plan.seq_stack, plan.seq_limit_s, floor_pids
                ),
                "http": await sequential(
                    floors.http_chat, plan.seq_stack, plan.seq_limit_s, floor_pids
                ),
            },
            "throughput": {
                "http": await load(floors.lean_http_chat, plan, floor_pids, clients),
            },
        }
        step("sequential latency")
        results["sequential"] = {
            "backend": await sequential(
                clients.backend_chat, plan.seq_backend, plan.seq_limit_s, pids
            ),
            "grpc": await sequential(clients.grpc_chat, plan.seq_stack, plan.seq_limit_s, pids),
            "gateway": await sequential(
                clients.gateway_chat, plan.seq_stack, plan.seq_limit_s, pids
            ),
        }
        step(f"throughput, {plan.load_clients} clients")
        lean = LeanLoad(backend_url, stack.url, plan.load_clients)
        try:
            results["throughput"] = {
                "backend": await load(lean.backend_chat, plan, pids, clients),
                "grpc": await load(clients.grpc_chat, plan, pids, clients),
                "gateway": await load(lean.gateway_chat, plan, pids, clients),
            }
            if plan.compare_httpx:
                results["throughput"]["gateway_httpx"] = await load(
                    clients.gateway_chat, plan, pids, clients
                )
        finally:
            await lean.aclose()
        if chat_only:
            return results
        step("streaming, per-token delay")
        results["streaming"] = {
            "backend": await streaming(clients.backend_stream, plan),
            "grpc": await streaming(clients.grpc_stream, plan),
            "gateway": await streaming(clients.gateway_stream, plan),
        }
        step(f"long conversation ({plan.long_messages} messages)")
        results["long_conversation"] = await long_conversation(clients, plan, pids)
        step(f"{BIG_STREAMS} open streams")
        results["open_streams"] = await many_streams(clients, stack.url, plan, pids)
    finally:
        await clients.aclose()
        await floors.aclose()
    return results


def step(what: str) -> None:
    print(f"  ... {what}", file=sys.stderr, flush=True)


def _finite(value: Any) -> Any:
    """NaN (a figure with no samples) as null, so the JSON file is standard JSON."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a ~30 s run with fewer samples")
    parser.add_argument(
        "--json",
        type=Path,
        help="where the raw figures and verdicts go (default build/bench.json; with "
        "--jwt-only or --cache-only only when given)",
    )
    parser.add_argument("--jwt-only", action="store_true", help="only the JWT figure (seconds)")
    parser.add_argument(
        "--cache-only", action="store_true", help="only the cache-warm conversation (~15 s)"
    )
    parser.add_argument(
        "--chat-only",
        action="store_true",
        help="only the floor probes and /api/chat at c=1 and c=32 (with --quick ~25 s)",
    )
    args = parser.parse_args()
    if args.cache_only:
        cache = asyncio.run(bench_cache.measure())
        bench_cache.report(cache)
        write_json(args.json, {"cache_warm": cache}, bench_cache.cache_verdicts(cache))
        return 0
    jwt = {} if args.chat_only else jwt_figures()  # in process, before the stack starts
    if args.jwt_only:
        print("\n".join(jwt_report(jwt)))
        write_json(args.json, {"jwt": jwt}, jwt_verdicts(jwt))
        return 0
    args.json = args.json or ROOT / "build" / "bench.json"
    plan = QUICK if args.quick else Plan()
    # 1,000 streams need ~1,000 sockets in every process; the children inherit this.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    workdir = ROOT / "build" / "bench-stack"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    meta: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "machine": machine(),
        "plan": asdict(plan),
        "logs": str(workdir),
    }
    started = time.perf_counter()
    print("starting the backend and the stack ...", file=sys.stderr, flush=True)
    backend, backend_url = start_backend(workdir / "backend.log")
    floor = start_floor(workdir)
    stack = Stack(workdir, stack_config(backend_url))
    try:
        stack.start()
        run = measure(plan, backend_url, backend.pid, stack, floor, chat_only=args.chat_only)
        try:
            import uvloop
        except ImportError:
            results = asyncio.run(run)
        else:
            results = uvloop.run(run)
    finally:
        stack.stop()
        for proc in (backend, *floor[0]):
            proc.terminate()
            proc.wait(10)
    if args.chat_only:
        meta["seconds"] = time.perf_counter() - started
        chat_report(meta, results)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(_finite({**meta, "results": results}), indent=2))
        return 0
    step("cache-warm conversation, on each provider")
    results["cache_warm"] = asyncio.run(bench_cache.measure())
    results["jwt"] = jwt
    meta["seconds"] = time.perf_counter() - started
    report(meta, results)
    bench_cache.report(results["cache_warm"])
    print("\n".join(jwt_report(jwt)))
    meta["verdicts"] = [
        {"target": t, "measured": m, "baseline": b, "met": ok} for t, m, b, ok in verdicts(results)
    ]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(_finite({**meta, "results": results}), indent=2))
    shown = args.json.relative_to(ROOT) if args.json.is_relative_to(ROOT) else args.json
    print(f"\nraw figures: {shown}; stack logs: {workdir.relative_to(ROOT)}")
    shared_queue(quick=args.quick)
    # The waiting scenario (issue 23): many streams at once against 64 slots.
    streams = ["--streams", "1000" if args.quick else "2000"]
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_waiting.py"), *streams], check=False
    )
    return 0


def write_json(
    path: Path | None, results: dict[str, Any], met: list[tuple[str, str, str, bool]]
) -> None:
    """One part's figures and its verdicts (``--jwt-only``, ``--cache-only``), when asked for."""
    if path is None:
        return
    meta = {
        "mode": "part",
        "loadavg": os.getloadavg(),
        "verdicts": [{"target": t, "measured": m, "baseline": b, "met": ok} for t, m, b, ok in met],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite({**meta, "results": results}), indent=2))


def shared_queue(*, quick: bool) -> None:
    """What a shared queue costs (DESIGN §9): the scheduler alone, then end to end.

    Needs PostgreSQL (AGENT_TEST_POSTGRES_URL, as in the tests); says so and skips
    otherwise. Each part is its own script, so it can also run alone.
    """
    if not os.environ.get("AGENT_TEST_POSTGRES_URL"):
        print("\nshared queue (PostgreSQL): skipped, AGENT_TEST_POSTGRES_URL is not set")
        return
    print("\nshared queue: admission -> grant, turns/s and statements per turn (scheduler alone)")
    turns = ["--turns", "200"] if quick else []
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_scheduler.py"), *turns], check=False
    )
    seconds = ["--seconds", "4" if quick else "8"]
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_replicas.py"), *seconds], check=False
    )
    if not quick:  # the waiting scenario on the shared queue (about 90 s)
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "scripts" / "bench_waiting.py"),
                *("--streams", "1000", "--scheduler", "postgres"),
            ],
            check=False,
        )


if __name__ == "__main__":
    raise SystemExit(main())
