"""`make bench`: measure the stack against the speed budget (DESIGN §6) and print figures.

Starts the fast fake Ollama (scripts/bench_backend.py), then the real service
and one gateway worker (tests/e2e/stack.py), and drives them from this
process, which is the only load generator. Every figure sits next to a
baseline taken in the same run (the same client straight at the backend),
because this machine is noisy. It only prints; it asserts nothing.

Chat turns use ``new_conversation: true`` so every turn reads and writes a
fresh conversation in the store instead of a history that grows with the run.
Raw figures go to build/bench.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
import httpx  # noqa: E402
from agent.v1 import agent_pb2 as pb  # noqa: E402
from agent.v1 import agent_pb2_grpc  # noqa: E402

from tests.e2e.stack import Stack, free_port  # noqa: E402

Send = Callable[[int], Awaitable[None]]
_STAMP = re.compile(r"<(\d+)>")
_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
_TOKEN_SPACING_MS = 20
_BIG_STREAMS = 1000


@dataclass(frozen=True)
class Plan:
    """How much of each measurement to take (the full run or --quick)."""

    seq_backend: int = 3000
    seq_stack: int = 1500
    seq_limit_s: float = 15.0
    load_clients: int = 32
    load_warmup_s: float = 1.5
    load_s: float = 10.0
    compare_httpx: bool = True  # also load the gateway with httpx, to show the client's cost
    stream_turns: int = 25
    stream_tokens: int = 10
    big_tokens: int = 5
    big_limit_s: float = 60.0


QUICK = Plan(
    seq_backend=600,
    seq_stack=300,
    seq_limit_s=4.0,
    load_warmup_s=0.5,
    load_s=3.0,
    compare_httpx=False,
    stream_turns=8,
    big_limit_s=12.0,
)


# --- process figures --------------------------------------------------------


def rss_kib(pid: int) -> int:
    """Resident set size from /proc (KiB); 0 if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) * _TICK_S


def machine_busy_s() -> float:
    """CPU seconds all processes on the machine have used (every field but idle and iowait)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    ticks = [int(f) for f in fields]
    return (sum(ticks) - ticks[3] - ticks[4]) * _TICK_S


class Meter:
    """CPU used by each process over a window, per request and as a share of one core.

    ``others`` is what the rest of the machine used meanwhile: this box is
    shared, and a busy neighbour explains a bad figure better than a guess.
    """

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._start = {name: cpu_s(pid) for name, pid in pids.items()}
        self._machine = machine_busy_s()
        self._t0 = time.perf_counter()

    def read(self, requests: int) -> dict[str, dict[str, float]]:
        wall = time.perf_counter() - self._t0
        used = {name: cpu_s(pid) - self._start[name] for name, pid in self.pids.items()}
        used["others"] = max(0.0, machine_busy_s() - self._machine - sum(used.values()))
        return {
            name: {
                "core_share": seconds / wall if wall else 0.0,
                "cpu_us_per_request": seconds / requests * 1e6 if requests else 0.0,
            }
            for name, seconds in used.items()
        }


def stats(values_ms: list[float]) -> dict[str, float]:
    if not values_ms:
        return {"n": 0, "p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    ordered = sorted(values_ms)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "n": len(ordered),
        "p50": at(0.50),
        "p99": at(0.99),
        "max": ordered[-1],
        "mean": sum(ordered) / len(ordered),
    }


# --- the three ways in --------------------------------------------------------


def ollama_body(message: str) -> dict[str, Any]:
    return {
        "model": "llama3.2",
        "stream": True,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": message},
        ],
    }


def chat_body(message: str, user: str) -> dict[str, Any]:
    return {"message": message, "user_id": user, "new_conversation": True}


class Clients:
    """The load generator's clients: backend, gateway (HTTP, keep-alive) and gRPC."""

    def __init__(self, backend_url: str, stack: Stack, connections: int) -> None:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        timeout = httpx.Timeout(120.0)
        self.backend = httpx.AsyncClient(base_url=backend_url, limits=limits, timeout=timeout)
        self.gateway = httpx.AsyncClient(base_url=stack.url, limits=limits, timeout=timeout)
        self.channel = grpc.aio.insecure_channel(stack.grpc_address)
        self.stub = agent_pb2_grpc.AgentServiceStub(self.channel)  # type: ignore[no-untyped-call]

    async def aclose(self) -> None:
        await self.backend.aclose()
        await self.gateway.aclose()
        await self.channel.close()

    async def backend_connections(self) -> int:
        """Connections the backend has accepted so far."""
        return int((await self.backend.get("/bench/stats")).json()["connections"])

    async def backend_chat(self, i: int) -> None:
        r = await self.backend.post("/api/chat", json=ollama_body("hi"))
        lines = [json.loads(line) for line in r.text.splitlines() if line]
        if r.status_code != 200 or not lines[-1].get("done"):
            raise RuntimeError(f"backend answered {r.status_code}")

    async def gateway_chat(self, i: int) -> None:
        r = await self.gateway.post("/api/chat", json=chat_body("hi", f"bench-{i % 32}"))
        if r.status_code != 200 or not r.json().get("response"):
            raise RuntimeError(f"gateway answered {r.status_code}: {r.text[:200]}")

    async def grpc_chat(self, i: int) -> None:
        reply = await self.stub.Chat(
            pb.ChatRequest(message="hi", user_id=f"bench-{i % 32}", new_conversation=True),
            timeout=30,
        )
        if not reply.response:
            raise RuntimeError("empty gRPC answer")

    # Streams: each returns the delay (ms) of every timed token, backend write -> here.

    async def backend_stream(self, message: str) -> list[float]:
        delays = []
        async with self.backend.stream("POST", "/api/chat", json=ollama_body(message)) as r:
            async for line in r.aiter_lines():
                now = time.time_ns()
                found = _STAMP.search(line)
                if found:
                    delays.append((now - int(found[1])) / 1e6)
        return delays

    async def gateway_stream(self, message: str, user: str = "bench-stream") -> list[float]:
        delays, event, done = [], "message", False
        body = chat_body(message, user)
        async with self.gateway.stream("POST", "/api/chat/stream", json=body) as r:
            if r.status_code != 200:
                raise RuntimeError(f"stream answered {r.status_code}: {(await r.aread())[:200]!r}")
            async for line in r.aiter_lines():
                now = time.time_ns()
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    if event == "message":
                        found = _STAMP.search(line)
                        if found:
                            delays.append((now - int(found[1])) / 1e6)
                    elif event == "done":
                        done = True
                    elif event == "error":
                        raise RuntimeError(f"stream error: {line}")
                elif not line:
                    event = "message"
        if not done:
            raise RuntimeError("stream ended without done")
        return delays

    async def grpc_stream(self, message: str) -> list[float]:
        delays, done = [], False
        request = pb.ChatStreamRequest(
            message=message, user_id="bench-stream", new_conversation=True
        )
        async for event in self.stub.ChatStream(request, timeout=60):
            now = time.time_ns()
            kind = event.WhichOneof("event")
            if kind == "text_delta":
                found = _STAMP.search(event.text_delta.text)
                if found:
                    delays.append((now - int(found[1])) / 1e6)
            elif kind == "done":
                done = True
        if not done:
            raise RuntimeError("gRPC stream ended without done")
        return delays


class RawHttp:
    """A lean HTTP/1.1 keep-alive client, one connection per load worker.

    httpx costs about a millisecond of CPU per request on this kind of
    machine, which a 2-core box cannot spare while it also runs the servers;
    this client costs tens of microseconds, so the servers get the cores.
    """

    def __init__(self, host: str, port: int, path: str, connections: int) -> None:
        self._address = (host, port)
        self._path = path
        self._streams: list[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None] = [
            None
        ] * connections

    @classmethod
    def for_url(cls, url: str, path: str, connections: int) -> RawHttp:
        parsed = httpx.URL(url)
        return cls(parsed.host, parsed.port or 80, path, connections)

    def request(self, body: dict[str, Any]) -> bytes:
        payload = json.dumps(body).encode()
        head = (
            f"POST {self._path} HTTP/1.1\r\nHost: {self._address[0]}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        )
        return head.encode() + payload

    async def post(self, slot: int, request: bytes) -> tuple[int, bytes]:
        """Send a prepared request on connection ``slot``; the status and the body."""
        pair = self._streams[slot]
        if pair is None:
            pair = await asyncio.open_connection(*self._address)
            self._streams[slot] = pair
        reader, writer = pair
        try:
            writer.write(request)
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
            status = int(head[9:12])
            if "transfer-encoding: chunked" in head:
                parts = []
                while size := int((await reader.readline()).strip(), 16):
                    parts.append((await reader.readexactly(size + 2))[:-2])
                await reader.readexactly(2)
                return status, b"".join(parts)
            length = int(head.split("content-length:", 1)[1].split("\r\n", 1)[0])
            return status, await reader.readexactly(length)
        except BaseException:
            self._streams[slot] = None
            writer.close()
            raise

    async def lines(self, request: bytes) -> AsyncIterator[str]:
        """Send a prepared request on a connection of its own; yield the body's lines.

        For streams: a chunked body is decoded, and lines are yielded as soon
        as they are complete. A status other than 200 is yielded as
        ``"HTTP <status>"`` and ends the stream.
        """
        reader, writer = await asyncio.open_connection(*self._address)
        try:
            writer.write(request)
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
            if head[9:12] != "200":
                yield f"HTTP {head[9:12]}"
                return
            buffer = b""
            while size := int((await reader.readline()).strip() or b"-1", 16):
                if size < 0:
                    raise ConnectionError("the server closed the stream mid-body")
                buffer += (await reader.readexactly(size + 2))[:-2]
                *complete, buffer = buffer.split(b"\n")
                for line in complete:
                    yield line.decode()
        finally:
            writer.close()

    async def aclose(self) -> None:
        for pair in self._streams:
            if pair is not None:
                pair[1].close()
        self._streams = [None] * len(self._streams)


class LeanLoad:
    """The throughput phase's HTTP senders, on RawHttp."""

    def __init__(self, backend_url: str, gateway_url: str, connections: int) -> None:
        self._backend = RawHttp.for_url(backend_url, "/api/chat", connections)
        self._gateway = RawHttp.for_url(gateway_url, "/api/chat", connections)
        self._connections = connections
        self._backend_request = self._backend.request(ollama_body("hi"))
        self._gateway_requests = [
            self._gateway.request(chat_body("hi", f"bench-{u}")) for u in range(32)
        ]

    async def backend_chat(self, i: int) -> None:
        status, body = await self._backend.post(i % self._connections, self._backend_request)
        if status != 200 or b'"done":true' not in body:
            raise RuntimeError(f"backend answered {status}")

    async def gateway_chat(self, i: int) -> None:
        status, body = await self._gateway.post(
            i % self._connections, self._gateway_requests[i % 32]
        )
        if status != 200 or b'"response"' not in body:
            raise RuntimeError(f"gateway answered {status}: {body[:200]!r}")

    async def aclose(self) -> None:
        await self._backend.aclose()
        await self._gateway.aclose()


# --- measurements ---------------------------------------------------------------


async def sequential(
    send: Send, count: int, limit_s: float, pids: dict[str, int]
) -> dict[str, Any]:
    """One request at a time: latency (ms) of each, and CPU per request in each process."""
    for i in range(min(100, count)):
        await send(i)
    latencies: list[float] = []
    meter = Meter(pids)
    deadline = time.perf_counter() + limit_s
    for i in range(count):
        t0 = time.perf_counter()
        await send(i)
        latencies.append((time.perf_counter() - t0) * 1e3)
        if t0 > deadline:
            break
    return {"latency_ms": stats(latencies), "cpu": meter.read(len(latencies))}


async def load(send: Send, plan: Plan, pids: dict[str, int], backend: Clients) -> dict[str, Any]:
    """``load_clients`` workers back to back for a fixed time: requests/s, latency, CPU."""
    loop = asyncio.get_running_loop()
    measuring = False
    stop_at = loop.time() + plan.load_warmup_s + plan.load_s
    done: list[float] = []
    errors: list[str] = []

    async def worker(w: int) -> None:
        i = w
        while loop.time() < stop_at:
            t0 = time.perf_counter()
            try:
                await send(i)
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(0.01)
                continue
            if measuring:
                done.append((time.perf_counter() - t0) * 1e3)
            i += plan.load_clients

    workers = [asyncio.create_task(worker(w)) for w in range(plan.load_clients)]
    await asyncio.sleep(plan.load_warmup_s)
    measuring = True
    connections = await backend.backend_connections()
    meter = Meter(pids)
    t0 = time.perf_counter()
    await asyncio.sleep(plan.load_s)
    measuring = False
    elapsed = time.perf_counter() - t0
    count = len(done)
    cpu = meter.read(count)
    connections = await backend.backend_connections() - connections
    async with asyncio.timeout(60):
        await asyncio.gather(*workers)
    return {
        "clients": plan.load_clients,
        "seconds": elapsed,
        "requests": count,
        "rps": count / elapsed,
        "latency_ms": stats(done),
        "errors": len(errors),
        "first_errors": errors[:3],
        "cpu": cpu,
        "backend_connections_opened": connections,
    }


async def streaming(stream: Callable[[str], Awaitable[list[float]]], plan: Plan) -> dict[str, Any]:
    """Per-token delay from the backend's write to this client, one stream at a time."""
    message = f"tokens={plan.stream_tokens} delay_ms={_TOKEN_SPACING_MS}"
    delays: list[float] = []
    await stream(message)
    for _ in range(plan.stream_turns):
        delays += await stream(message)
    on_time = sum(1 for d in delays if d < _TOKEN_SPACING_MS)
    return {
        "spacing_ms": _TOKEN_SPACING_MS,
        "delay_ms": stats(delays),
        "share_before_next_token": on_time / len(delays) if delays else 0.0,
    }


async def many_streams(
    clients: Clients, gateway_url: str, plan: Plan, pids: dict[str, int]
) -> dict[str, Any]:
    """``_BIG_STREAMS`` slow streams at once: memory before/during, waits, completion.

    The streams are read with RawHttp, one connection each: httpx's pool does
    work proportional to its size on every request, which at 1,000
    connections would make this client a bottleneck of its own.
    """
    message = f"tokens={plan.big_tokens} delay_ms=1000"
    gateway = RawHttp.for_url(gateway_url, "/api/chat/stream", 0)
    before = {name: rss_kib(pid) for name, pid in pids.items()}
    peak = dict(before)
    open_now = most_open = 0
    outcomes: list[str] = []
    open_ms: list[float] = []
    first_token_ms: list[float] = []
    token_delay_ms: list[float] = []

    async def one(i: int) -> None:
        nonlocal open_now, most_open
        t0, event, counted, first = time.perf_counter(), "message", False, True
        request = gateway.request(chat_body(message, f"bench-{i % 32}"))
        try:
            async for line in gateway.lines(request):
                if not counted:
                    if line.startswith("HTTP "):
                        outcomes.append(line)
                        return
                    open_ms.append((time.perf_counter() - t0) * 1e3)
                    open_now, counted = open_now + 1, True
                    most_open = max(most_open, open_now)
                if line.startswith("event:"):
                    event = line[6:].strip()
                    if event in ("done", "error"):
                        outcomes.append(event)
                        return
                elif line.startswith("data:") and event == "message":
                    found = _STAMP.search(line)
                    if found:
                        token_delay_ms.append((time.time_ns() - int(found[1])) / 1e6)
                        if first:
                            first_token_ms.append((time.perf_counter() - t0) * 1e3)
                            first = False
                elif not line:
                    event = "message"
            outcomes.append("ended without done")
        except Exception as exc:
            outcomes.append(type(exc).__name__)
        finally:
            if counted:
                open_now -= 1

    async def sample() -> None:
        while True:
            for name, pid in pids.items():
                peak[name] = max(peak[name], rss_kib(pid))
            await asyncio.sleep(0.1)

    await clients.backend.get("/bench/stats")  # resets the backend's peak
    sampler = asyncio.create_task(sample())
    meter = Meter(pids)
    t0 = time.perf_counter()
    tasks = [asyncio.create_task(one(i)) for i in range(_BIG_STREAMS)]
    _, unfinished = await asyncio.wait(tasks, timeout=plan.big_limit_s)
    for task in unfinished:
        task.cancel()
    await asyncio.gather(*unfinished, return_exceptions=True)
    elapsed = time.perf_counter() - t0
    cpu = meter.read(_BIG_STREAMS)
    sampler.cancel()
    backend = (await clients.backend.get("/bench/stats")).json()
    await asyncio.sleep(1.0)
    after = {name: rss_kib(pid) for name, pid in pids.items()}
    tally: dict[str, int] = {}
    for outcome in outcomes:
        tally[outcome] = tally.get(outcome, 0) + 1
    if unfinished:
        tally["still open at the time limit"] = len(unfinished)
    return {
        "streams": _BIG_STREAMS,
        "tokens_each": plan.big_tokens,
        "token_spacing_s": 1.0,
        "seconds": elapsed,
        "outcomes": tally,
        "most_open_at_client": most_open,
        "most_open_at_backend": backend["peak"],
        "open_ms": stats(open_ms),
        "first_token_ms": stats(first_token_ms),
        "token_delay_ms": stats(token_delay_ms),
        "rss_kib_before": before,
        "rss_kib_peak": peak,
        "rss_kib_after": after,
        "cpu": cpu,
    }


# --- the stack -----------------------------------------------------------------


def start_backend(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (workdir / "backend.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "bench_backend.py"), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/api/version", timeout=0.5).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the bench backend did not start")


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


async def measure(plan: Plan, backend_url: str, backend_pid: int, stack: Stack) -> dict[str, Any]:
    assert stack.service and stack.service.popen and stack.gateway and stack.gateway.popen
    servers = {
        "gateway": stack.gateway.popen.pid,
        "service": stack.service.popen.pid,
        "backend": backend_pid,
    }
    pids = {**servers, "client": os.getpid()}
    clients = Clients(backend_url, stack, connections=2 * plan.load_clients)
    results: dict[str, Any] = {}
    try:
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
        step("streaming, per-token delay")
        results["streaming"] = {
            "backend": await streaming(clients.backend_stream, plan),
            "grpc": await streaming(clients.grpc_stream, plan),
            "gateway": await streaming(clients.gateway_stream, plan),
        }
        step(f"{_BIG_STREAMS} open streams")
        results["open_streams"] = await many_streams(clients, stack.url, plan, pids)
    finally:
        await clients.aclose()
    return results


def step(what: str) -> None:
    print(f"  ... {what}", file=sys.stderr, flush=True)


# --- the report ----------------------------------------------------------------


def verdicts(r: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """(target, measured, against the baseline, met) for each DESIGN §6 figure."""
    seq = r["sequential"]
    added = seq["gateway"]["latency_ms"]["p50"] - seq["backend"]["latency_ms"]["p50"]
    seq_ratio = seq["gateway"]["latency_ms"]["p50"] / seq["backend"]["latency_ms"]["p50"]
    tput = r["throughput"]
    rps = tput["gateway"]["rps"]
    st = r["streaming"]["gateway"]
    st_base = r["streaming"]["backend"]["delay_ms"]["p50"]
    big = r["open_streams"]
    grown = sum(big["rss_kib_peak"][p] - big["rss_kib_before"][p] for p in ("gateway", "service"))
    per_stream = grown / big["streams"]
    completed = big["outcomes"].get("done", 0)
    at_backend = big["most_open_at_backend"]
    base_rss = sum(big["rss_kib_before"][p] for p in ("gateway", "service"))
    return [
        (
            "one request at a time adds <= 1.2 ms (p50)",
            f"+{added:.2f} ms",
            f"{seq_ratio:.1f}x the backend's p50",
            added <= 1.2,
        ),
        (
            "32 clients: >= 800 req/s through both hops",
            f"{rps:.0f} req/s",
            f"{rps / tput['backend']['rps']:.3f}x the backend direct, "
            f"{rps / tput['grpc']['rps']:.2f}x the service alone (gRPC)",
            rps >= 800,
        ),
        (
            f"a token is not held for the next ({_TOKEN_SPACING_MS} ms later)",
            f"{st['share_before_next_token']:.1%} in time, p99 {st['delay_ms']['p99']:.2f} ms",
            f"p50 {st['delay_ms']['p50'] / st_base:.1f}x the backend direct",
            st["share_before_next_token"] >= 0.99,
        ),
        (
            f"{big['streams']} open streams are cheap (all stream at once, finish, "
            "<= 100 KiB each)",
            f"{completed}/{big['streams']} done, {at_backend} at once at the backend, "
            f"{per_stream:.0f} KiB/stream",
            f"gateway+service RSS +{grown / 1024:.0f} MiB over {base_rss / 1024:.0f} MiB "
            f"({(base_rss + grown) / base_rss:.2f}x)",
            completed == big["streams"]
            and at_backend >= 0.99 * big["streams"]
            and per_stream <= 100,
        ),
    ]


def row(*cells: object, widths: tuple[int, ...] = (26, 7, 9, 9, 9, 14)) -> str:
    out: list[str] = []
    for cell, width in zip(cells, widths, strict=False):
        text = f"{cell:.2f}" if isinstance(cell, float) else str(cell)
        out.append(text.ljust(width) if not out else text.rjust(width))
    return " ".join(out)


def cpu_line(cpu: dict[str, dict[str, float]], key: str, unit: str) -> str:
    parts = [
        f"{name} {v[key] * (100 if key == 'core_share' else 1):.0f}{unit}"
        for name, v in cpu.items()
    ]
    return ", ".join(parts)


def report(meta: dict[str, Any], r: dict[str, Any]) -> None:
    sys.stderr.flush()
    m = meta["machine"]
    print(f"\nagent-service benchmark ({meta['mode']} run, {meta['seconds']:.0f} s)")
    print(
        f"machine: {m['cores']} cores ({m['usable_cores']} usable), {m['cpu']}, "
        f"{m['implementation']} {m['python']}, uvloop {m['uvloop']}, grpcio {m['grpcio']}"
    )
    print(
        f"speed: one small JSON dumps+loads takes {m['json_round_trip_us']:.1f} us here; "
        f"load average at start {m['loadavg_at_start'][0]:.2f}"
    )
    print(
        "stack: 1 gateway worker + 1 service + bench_backend.py (fake Ollama); "
        "client = this process (httpx / grpc.aio on uvloop)"
    )
    print("chat turns: new_conversation=true, users bench-0..31 (one store write per turn)")

    seq = r["sequential"]
    base = seq["backend"]["latency_ms"]["p50"]
    print("\n1-3. Sequential latency, one request at a time (ms)")
    print(row("path", "n", "p50", "p99", "mean", "p50 vs backend"))
    for key, label in (
        ("backend", "backend direct (HTTP)"),
        ("grpc", "service via gRPC Chat"),
        ("gateway", "gateway POST /api/chat"),
    ):
        s = seq[key]["latency_ms"]
        print(
            row(
                label,
                s["n"],
                s["p50"],
                s["p99"],
                s["mean"],
                f"{s['p50'] / base:.2f}x +{s['p50'] - base:.2f}",
            )
        )
    g, c = seq["gateway"]["latency_ms"]["p50"], seq["grpc"]["latency_ms"]["p50"]
    print(
        f"  added p50: service hop (gRPC - backend) {c - base:.2f} ms, "
        f"gateway hop (gateway - gRPC) {g - c:.2f} ms, total {g - base:.2f} ms"
    )
    for key in ("grpc", "gateway"):
        print(
            f"  CPU per request ({key} run): "
            f"{cpu_line(seq[key]['cpu'], 'cpu_us_per_request', ' us')}"
        )

    tp = r["throughput"]
    labels = {
        "backend": "backend direct (lean)",
        "grpc": "service via gRPC Chat",
        "gateway": "gateway /api/chat (lean)",
        "gateway_httpx": "gateway /api/chat (httpx)",
    }
    rows = [(key, label) for key, label in labels.items() if key in tp]
    print(
        f"\n4. Throughput, {tp['gateway']['clients']} concurrent clients, keep-alive "
        "(lean = this script's raw HTTP/1.1 client)"
    )
    print(row("path", "errors", "req/s", "p50 ms", "p99 ms", "vs backend"))
    for key, label in rows:
        t = tp[key]
        print(
            row(
                label,
                t["errors"],
                f"{t['rps']:.0f}",
                t["latency_ms"]["p50"],
                t["latency_ms"]["p99"],
                f"{t['rps'] / tp['backend']['rps']:.3f}x",
            )
        )
    for key, label in rows:
        cpu = tp[key]["cpu"]
        busy = sum(v["core_share"] for v in cpu.values())
        print(
            f"  {label}: % of one core: {cpu_line(cpu, 'core_share', '%')} "
            f"(sum {busy:.2f} of {m['usable_cores']})"
        )
        pad = " " * len(label)
        print(f"  {pad}  CPU per request: {cpu_line(cpu, 'cpu_us_per_request', ' us')}")
        print(f"  {pad}  new connections at the backend: {tp[key]['backend_connections_opened']}")
    for key, label in rows[2:]:
        cpu = tp[key]["cpu"]
        client = cpu["client"]["core_share"]
        busy = sum(v["core_share"] for v in cpu.values())
        if client > 0.85:
            verdict = "it may be the bottleneck"
        elif busy > 0.9 * m["usable_cores"]:
            verdict = "the cores are all busy, so it takes CPU the servers need"
        else:
            verdict = "not the bottleneck"
        print(f"  {label}: the client used {client:.0%} of a core: {verdict}")
    if tp["backend"]["cpu"]["client"]["core_share"] > 0.85:
        print("  (the backend-direct baseline is bound by this client, so it is a floor)")

    st = r["streaming"]
    base = st["backend"]["delay_ms"]["p50"]
    print(
        f"\n5. Streaming: backend write -> client receipt per token, "
        f"tokens {_TOKEN_SPACING_MS} ms apart (ms)"
    )
    print(row("path", "tokens", "p50", "p99", "max", "< spacing"))
    for key, label in (
        ("backend", "backend direct (NDJSON)"),
        ("grpc", "gRPC ChatStream"),
        ("gateway", "gateway SSE"),
    ):
        d = st[key]["delay_ms"]
        print(
            row(
                label,
                d["n"],
                d["p50"],
                d["p99"],
                d["max"],
                f"{st[key]['share_before_next_token']:.1%}",
            )
        )
    print(f"  gateway p50 is {st['gateway']['delay_ms']['p50'] / base:.1f}x the backend's")

    big = r["open_streams"]
    print(
        f"\n6. {big['streams']} concurrent streams ({big['tokens_each']} tokens, 1 s apart), "
        f"{big['seconds']:.1f} s"
    )
    print(
        f"  outcomes: {big['outcomes']}; open at once: {big['most_open_at_client']} at the "
        f"client, {big['most_open_at_backend']} at the backend"
    )
    for key, label in (
        ("open_ms", "request -> SSE headers"),
        ("first_token_ms", "request -> first token"),
        ("token_delay_ms", "token write -> receipt"),
    ):
        d = big[key]
        print(
            f"  {label}: p50 {d['p50']:.1f} ms, p99 {d['p99']:.1f} ms, max {d['max']:.1f} ms "
            f"(n={d['n']})"
        )
    print(f"  % of one core meanwhile: {cpu_line(big['cpu'], 'core_share', '%')}")
    print(row("process RSS (MiB)", "", "before", "peak", "after", "KiB/stream"))
    for name in ("gateway", "service", "backend", "client"):
        b, p, a = (big[k][name] / 1024 for k in ("rss_kib_before", "rss_kib_peak", "rss_kib_after"))
        print(row(name, "", b, p, a, f"{(p - b) * 1024 / big['streams']:.1f}"))

    print("\nSummary against DESIGN §6")
    for target, measured, ratio, met in verdicts(r):
        print(f"  [{'met' if met else 'NOT met'}] {target}\n      {measured}; {ratio}")


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
    parser.add_argument("--json", type=Path, default=ROOT / "build" / "bench.json")
    args = parser.parse_args()
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
    backend, backend_url = start_backend(workdir)
    stack = Stack(workdir, stack_config(backend_url))
    try:
        stack.start()
        try:
            import uvloop
        except ImportError:
            results = asyncio.run(measure(plan, backend_url, backend.pid, stack))
        else:
            results = uvloop.run(measure(plan, backend_url, backend.pid, stack))
    finally:
        stack.stop()
        backend.terminate()
        backend.wait(10)
    meta["seconds"] = time.perf_counter() - started
    report(meta, results)
    meta["verdicts"] = [
        {"target": t, "measured": m, "baseline": b, "met": ok} for t, m, b, ok in verdicts(results)
    ]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(_finite({**meta, "results": results}), indent=2))
    shown = args.json.relative_to(ROOT) if args.json.is_relative_to(ROOT) else args.json
    print(f"\nraw figures: {shown}; stack logs: {workdir.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
