"""A client that sends its whole body before reading still gets the 413, over a real socket.

Python's http.client writes the entire request before it reads a byte, as
many mobile HTTP stacks do. Were the gateway to close with the body unread,
the kernel would reset the connection and the client would see "connection
reset" instead of the answer; the gateway drains the rest first.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
from collections.abc import AsyncIterator, Iterator

import pytest
import uvicorn
from starlette.types import Message, Receive, Scope, Send

from gateway.app import create_app
from gateway.body_limit import BodySizeLimit
from gateway.config import GatewaySettings

LIMIT = 4096
BIG = 8 * 1024 * 1024  # well past what socket buffers hold


@pytest.fixture
async def port() -> AsyncIterator[int]:
    """A gateway (no service behind it) served by uvicorn on a loopback socket."""
    app = create_app(
        GatewaySettings(grpc={"address": "127.0.0.1:9"}, api_server={"max_body_bytes": LIMIT})
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="critical", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    yield sock.getsockname()[1]
    server.should_exit = True
    await task
    sock.close()


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
        return response.status, json.loads(response.read())
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
