"""A client that sends its whole body before reading still gets the 413, over a real socket.

Python's http.client writes the entire request before it reads a byte, as
many mobile HTTP stacks do. Were the gateway to close with the body unread,
the kernel would reset the connection and the client would see "connection
reset" instead of the answer; the gateway drains the rest first, for a
bounded time, then closes. The gateway app runs under uvicorn with the
gateway's own HTTP protocol (``PROTOCOL_PATH``), as agent-gateway runs it.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send

from gateway.app import create_app
from gateway.body_limit import BodySizeLimit
from gateway.config import GatewaySettings
from gateway.http_protocol import PROTOCOL_PATH
from tests.openapi_check import gateway_check

LIMIT = 4096
BIG = 8 * 1024 * 1024  # well past what socket buffers hold
DRAIN_S = 0.3  # the drain's time bound of the gateway that test_the_drain_... runs


def gateway_app(*, drain_max_s: float | None = None) -> FastAPI:
    """The gateway (no service behind it); ``drain_max_s`` replaces its drain's time bound."""
    app = create_app(
        GatewaySettings(grpc={"address": "127.0.0.1:9"}, api_server={"max_body_bytes": LIMIT})
    )
    if drain_max_s is not None:  # before the first request builds the middleware stack
        [limit] = [m for m in app.user_middleware if m.cls is BodySizeLimit]
        limit.kwargs["drain_max_s"] = drain_max_s
    return app


async def _serve(app: FastAPI) -> AsyncIterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="critical", lifespan="on", http=PROTOCOL_PATH)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    yield sock.getsockname()[1]
    server.should_exit = True
    await task
    sock.close()


@pytest.fixture
async def port() -> AsyncIterator[int]:
    """The gateway served by uvicorn on a loopback socket, with the gateway's HTTP protocol."""
    async for each in _serve(gateway_app()):
        yield each


@pytest.fixture
async def short_drain_port() -> AsyncIterator[int]:
    """The same, its drain bounded at DRAIN_S."""
    async for each in _serve(gateway_app(drain_max_s=DRAIN_S)):
        yield each


def _post(port: int, body: bytes | Iterator[bytes], headers: dict[str, str]) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        # request() writes the whole body before getresponse() reads anything.
        conn.request(
            "POST",
            "/api/chat",
            body=body,
            headers={"content-type": "application/json", **headers},
            encode_chunked=not isinstance(body, bytes),
        )
        response = conn.getresponse()
        raw = response.read()
        # Held to the OpenAPI document like every other answer of the suite.
        answer_headers = httpx.Headers(response.getheaders())
        problems = gateway_check().problems(
            "POST", "/api/chat", response.status, answer_headers, raw
        )
        assert not problems, problems
        assert answer_headers["connection"] == "close"  # the body may be left unread
        return response.status, json.loads(raw)
    finally:
        conn.close()


def _chunks() -> Iterator[bytes]:
    yield b'{"message": "'
    for _ in range(BIG // 65536):
        yield b"x" * 65536
    yield b'"}'


# urllib sends "Connection: close": the server closes right after its answer.
CLOSE = {"connection": "close"}


@pytest.mark.parametrize("headers", [CLOSE, {}], ids=["connection-close", "keep-alive"])
async def test_a_declared_body_sent_in_full_first_still_reads_413(
    port: int, headers: dict[str, str]
) -> None:
    body = b'{"message": "' + b"x" * BIG + b'"}'
    status, answer = await asyncio.to_thread(_post, port, body, headers)
    assert (status, answer["code"]) == (413, "payload_too_large")


@pytest.mark.parametrize("headers", [CLOSE, {}], ids=["connection-close", "keep-alive"])
async def test_a_chunked_body_sent_in_full_first_still_reads_413(
    port: int, headers: dict[str, str]
) -> None:
    status, answer = await asyncio.to_thread(_post, port, _chunks(), headers)
    assert (status, answer["code"]) == (413, "payload_too_large")


def _stall(port: int) -> tuple[bytes, float]:
    """Announce a big body, send a little of it, then send nothing more and only read.

    What the gateway wrote, and how long after the first byte of its answer it closed.
    """
    head = (
        "POST /api/chat HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        f"Content-Length: {BIG}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + b'{"message": "' + b"x" * 1000)
        received = sock.recv(65536)
        answered = time.monotonic()
        while chunk := sock.recv(65536):
            received += chunk
        return received, time.monotonic() - answered


async def test_the_drain_ends_at_its_time_bound_and_closes(short_drain_port: int) -> None:
    """A client that stops sending its body gets the 413 at once, and the end DRAIN_S later.

    Not uvicorn's keep-alive timeout (5 s) or the header timeout (10 s), which
    would also have written a 408 after the 413.
    """
    received, closed_after = await asyncio.to_thread(_stall, short_drain_port)
    assert received.startswith(b"HTTP/1.1 413 ") and received.count(b"HTTP/1.1 ") == 1, received
    assert b"connection: close\r\n" in received.lower()
    assert b'"code":"payload_too_large"' in received
    # The lower bound is the drain's own wait; the upper one leaves room for a slow machine.
    assert DRAIN_S * 0.9 <= closed_after < 4.0, closed_after


async def test_the_drain_is_bounded_in_bytes() -> None:
    """Past drain_max_bytes the gateway stops reading, and the answer is already out."""
    pulled = 0
    sent: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("a declared body over the limit never reaches the app")

    async def receive() -> Message:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b"x" * 1024, "more_body": True}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body" and not sent[-1].get("more_body", True):
            raise AssertionError("sent after the end")
        sent.append(message)

    limit = BodySizeLimit(app, LIMIT, drain_max_bytes=10 * 1024, drain_max_s=5.0)
    scope = {"type": "http", "headers": [(b"content-length", str(BIG).encode())]}
    await limit(scope, receive, send)
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["code"] == "payload_too_large" and sent[1]["more_body"]
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert pulled == 11  # 10 KiB are drained; the read that passes the bound is the last


async def test_an_expect_continue_client_is_not_invited_to_send() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("never reached")

    async def receive() -> Message:
        raise AssertionError("reading would send 100 Continue")

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    headers = [(b"content-length", str(BIG).encode()), (b"expect", b"100-continue")]
    await BodySizeLimit(app, LIMIT)({"type": "http", "headers": headers}, receive, send)
    assert sent[0]["status"] == 413 and not sent[-1].get("more_body", False)
