"""Benchmark tools: process figures, and the clients that drive the stack."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
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
STAMP = re.compile(r"<(\d+)>")
TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
TOKEN_SPACING_MS = 20
BIG_STREAMS = 1000


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
    long_messages: int = 2000  # the long conversation of the history-cost phase
    long_turns: int = 300


QUICK = Plan(
    seq_backend=600,
    seq_stack=300,
    seq_limit_s=4.0,
    load_warmup_s=0.5,
    load_s=3.0,
    compare_httpx=False,
    stream_turns=8,
    big_limit_s=12.0,
    long_turns=100,
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
    return (int(fields[11]) + int(fields[12])) * TICK_S


def machine_busy_s() -> float:
    """CPU seconds all processes on the machine have used (every field but idle and iowait)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    ticks = [int(f) for f in fields]
    return (sum(ticks) - ticks[3] - ticks[4]) * TICK_S


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
                found = STAMP.search(line)
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
                        found = STAMP.search(line)
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
                found = STAMP.search(event.text_delta.text)
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


def start_backend(log: Path | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """The fast fake Ollama (scripts/bench_backend.py) on a free port, once it answers.

    Its output goes to ``log`` (or nowhere).
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    out = log.open("wb") if log is not None else subprocess.DEVNULL
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("bench_backend.py")), "--port", str(port)],
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    if log is not None:
        out.close()  # type: ignore[union-attr]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/api/version", timeout=0.5).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the bench backend did not start")
