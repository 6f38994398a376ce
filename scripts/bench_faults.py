"""Figures for the fault and abuse limits (issue 18): prints them, asserts nothing.

    python scripts/bench_faults.py mcp     # a 50 MB MCP tool result against max_message_bytes
    python scripts/bench_faults.py http    # 300 silent/trickling clients on the gateway's protocol
    python scripts/bench_faults.py grpc    # 300 silent/preface-only connections on the gRPC port

Run from the repository root with the project's environment (the MCP figure
starts tests/tools/mcp_test_server.py; the others listen on 127.0.0.1 only).
The default timeouts apply (10 s for headers and handshakes), so expect the
floods to be shed after about that long.
"""

from __future__ import annotations

import asyncio
import resource
import socket
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FLOOD = 300


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def mcp() -> None:
    from service.config import McpServerSection
    from service.tools.mcp_client import McpConnection

    server = McpServerSection(
        name="t", command=sys.executable, args=[str(ROOT / "tests/tools/mcp_test_server.py")]
    )
    connection = McpConnection(server, on_tools=lambda *_: None, retry_initial_s=1, retry_max_s=1)
    connection.start()
    await connection.wait_settled()
    worst_lag = 0.0

    async def ticker() -> None:  # how late the event loop runs while the answer arrives
        nonlocal worst_lag
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.01)
            worst_lag = max(worst_lag, time.perf_counter() - before - 0.01)

    lag = asyncio.create_task(ticker())
    started, cpu = time.perf_counter(), cpu_s()
    try:
        await connection.call_tool("big", {"size": 50_000_000})
        outcome = "a result"
    except Exception as exc:
        outcome = f"an error ({str(exc)[:90]}...)"
    print(
        f"mcp: a 50 MB result ended in {time.perf_counter() - started:.2f} s with {outcome}; "
        f"service CPU {cpu_s() - cpu:.2f} s; worst event-loop lag {worst_lag * 1000:.0f} ms"
    )
    lag.cancel()
    await connection.stop()


async def shed(port: int, first: bytes) -> float:
    """Open FLOOD connections sending ``first``; seconds until the server closed them all."""
    loop = asyncio.get_running_loop()
    socks = []
    for _ in range(FLOOD):
        sock = socket.socket()
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        if first:
            await loop.sock_sendall(sock, first)
        socks.append(sock)
    started = time.perf_counter()

    async def closed(sock: socket.socket) -> None:
        try:
            while await loop.sock_recv(sock, 65536):
                pass
        except ConnectionResetError:
            pass

    try:
        async with asyncio.timeout(120):
            await asyncio.gather(*(closed(s) for s in socks))
    finally:
        for sock in socks:
            sock.close()
    return time.perf_counter() - started


async def http() -> None:
    import uvicorn

    from gateway.http_protocol import JsonErrorHttpToolsProtocol

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, http=JsonErrorHttpToolsProtocol, log_level="error"
        )
    )
    serving = asyncio.create_task(server.serve())
    for _ in range(1000):  # uvicorn offers no event for "listening"
        if server.started:
            break
        await asyncio.sleep(0.01)
    for what, first in (("silent", b""), ("trickling headers", b"GET / HTTP/1.1\r\nHost: x\r\n")):
        print(f"http: {FLOOD} {what} connections all closed after {await shed(port, first):.1f} s")
    server.should_exit = True
    await serving


async def grpc_port() -> None:
    import grpc

    from service.config import Settings
    from service.server import server_options

    server = grpc.aio.server(options=server_options(Settings()))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    for what, first in (("silent", b""), ("preface-only", preface)):
        print(f"grpc: {FLOOD} {what} connections all closed after {await shed(port, first):.1f} s")
    await server.stop(None)


if __name__ == "__main__":
    which = {"mcp": mcp, "http": http, "grpc": grpc_port}
    asyncio.run(which[sys.argv[1] if len(sys.argv) > 1 else "mcp"]())
