"""Slow and idle connections are shed by both listeners; live calls and streams are not.

Real sockets (the point is what the listeners do with them): the gRPC server
with the service's options, and uvicorn with the gateway's HTTP protocol.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
import uvicorn
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from gateway.http_protocol import BODY_TIMEOUT_ENV, HEADER_TIMEOUT_ENV, JsonErrorHttpToolsProtocol
from service.config import Settings
from service.server import server_options
from tests.ports import free_port

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # length 0, type SETTINGS, stream 0


async def closed_by_server(sock: socket.socket, timeout_s: float = 20.0) -> bytes:
    """Read until the server closes the connection; what it sent meanwhile."""
    loop = asyncio.get_running_loop()
    received = b""
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                chunk = await loop.sock_recv(sock, 65536)
            except ConnectionResetError:
                return received
            if not chunk:
                return received
            received += chunk


async def connect(port: int, first: bytes = b"") -> socket.socket:
    sock = socket.socket()
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    if first:
        await asyncio.get_running_loop().sock_sendall(sock, first)
    return sock


def goaway_in(data: bytes) -> bool:
    """Whether the HTTP/2 frames in ``data`` (server preface onwards) hold a GOAWAY."""
    at = 0
    while at + 9 <= len(data):
        length, kind = int.from_bytes(data[at : at + 3], "big"), data[at + 3]
        if kind == 7:
            return True
        at += 9 + length
    return False


@pytest.fixture
async def grpc_port() -> AsyncIterator[tuple[int, health.aio.HealthServicer]]:
    settings = Settings(grpc={"handshake_timeout_s": 0.5, "idle_timeout_s": 1.0})
    server = grpc.aio.server(options=server_options(settings))
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield port, servicer
    await server.stop(None)


async def test_grpc_sheds_silent_and_preface_only_connections_but_keeps_a_live_stream(
    grpc_port: tuple[int, health.aio.HealthServicer],
) -> None:
    port, servicer = grpc_port
    await servicer.set("svc", health_pb2.HealthCheckResponse.SERVING)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service="svc")
        )
        updates = aiter(watch)
        assert (await anext(updates)).status == health_pb2.HealthCheckResponse.SERVING

        flood = [await connect(port) for _ in range(20)]
        flood += [await connect(port, H2_PREFACE) for _ in range(20)]
        # Handshake done, then nothing: the idle timeout sends GOAWAY (frame type 7).
        idle = [await connect(port, H2_PREFACE + EMPTY_SETTINGS) for _ in range(5)]
        flood += idle
        try:
            await asyncio.gather(*(closed_by_server(s) for s in flood[:-5]))
            for sock in idle:
                assert goaway_in(await closed_by_server(sock))
        finally:
            for sock in flood:
                sock.close()
        # The stream outlived the handshake timeout and the idle timeout many times over.
        await servicer.set("svc", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert (await anext(updates)).status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the whole body, then streams three chunks (slowly on /slow)."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for n in range(3):
        if scope["path"] == "/slow":
            await asyncio.sleep(0.5)  # the response outlasts both timeouts
        await send({"type": "http.response.body", "body": b"%d;" % n, "more_body": True})
    await send({"type": "http.response.body", "body": b"%d bytes" % len(body)})


@pytest.fixture
async def http_port(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[int]:
    monkeypatch.setenv(HEADER_TIMEOUT_ENV, "0.5")
    monkeypatch.setenv(BODY_TIMEOUT_ENV, "0.5")
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, http=JsonErrorHttpToolsProtocol, lifespan="off"
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    async with asyncio.timeout(10):
        while not server.started:
            await asyncio.sleep(0.01)
    yield port
    server.should_exit = True
    await serving


async def test_gateway_sheds_silent_trickling_and_stalled_clients_with_408(
    http_port: int,
) -> None:
    silent = [await connect(http_port) for _ in range(10)]
    head = b"POST /x HTTP/1.1\r\nHost: t\r\n"  # the head never ends
    trickling = [await connect(http_port, head) for _ in range(10)]
    stalled_body = b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789"
    stalled = [await connect(http_port, stalled_body) for _ in range(10)]
    try:
        answers = await asyncio.gather(*(closed_by_server(s) for s in silent + trickling + stalled))
    finally:
        for sock in silent + trickling + stalled:
            sock.close()
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
        assert b'"code": "deadline_exceeded"' in answer
    assert b"request headers did not arrive within 0.5 s" in answers[0]
    assert b"request body did not arrive within 0.5 s" in answers[-1]


async def trickle(sock: socket.socket, stop: asyncio.Event) -> int:
    """Send one byte every 0.1 s until the server closes the connection; how many went."""
    loop = asyncio.get_running_loop()
    sent = 0
    while not stop.is_set():
        await asyncio.sleep(0.1)
        try:
            await loop.sock_sendall(sock, b"a")
        except OSError:  # closed by the server
            break
        sent += 1
    return sent


@pytest.mark.parametrize(
    ("start", "what"),
    [
        (b"POST /x HTTP/1.1\r\nHost: t\r\nX-Slow: ", b"request headers"),
        (b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n", b"request body"),
    ],
    ids=["head", "body"],
)
async def test_gateway_a_byte_every_tenth_of_a_second_does_not_reset_the_deadline(
    http_port: int, start: bytes, what: bytes
) -> None:
    # The timeouts are 0.5 s: a deadline that data reset would never expire here, and
    # the connection would stay open until the bound of closed_by_server fails the test.
    sock = await connect(http_port, start)
    stop = asyncio.Event()
    trickling = asyncio.create_task(trickle(sock, stop))
    try:
        answer = await closed_by_server(sock, timeout_s=10.0)
    finally:
        stop.set()
        await trickling
        sock.close()
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
    assert what + b" did not arrive within 0.5 s" in answer


async def test_gateway_timeouts_never_cut_a_live_request_or_a_long_response(
    http_port: int,
) -> None:
    url = f"http://127.0.0.1:{http_port}"
    async with httpx.AsyncClient(base_url=url) as client:  # not the gateway: a test app
        slow = await client.post("/slow", content=b"x" * 1000)  # 1.5 s of response
        assert slow.status_code == 200 and slow.text == "0;1;2;1000 bytes"
        again = await client.get("/fast")  # the same kept-alive connection, head timed anew
        assert again.text == "0;1;2;0 bytes"
