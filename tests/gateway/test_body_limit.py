"""api_server.max_body_bytes: larger bodies get 413 before they are read in full."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from gateway.app import channel_options, create_app, grpc_request_limit
from gateway.config import GatewaySettings
from service.server import server_options
from tests.gateway.conftest import AUTH, service_settings

LIMIT = 4096  # lone_gateway's limit


def _assert_413(r: httpx.Response) -> None:
    assert r.status_code == 413, r.text
    assert r.json()["code"] == "payload_too_large"
    assert "retry-after" not in r.headers  # the same body will never fit


@pytest.mark.parametrize("route", ["/api/chat", "/api/chat/stream", "/api/queue/cancel"])
async def test_declared_length_over_the_limit_is_413(
    lone_gateway: httpx.AsyncClient, route: str
) -> None:
    body = json.dumps({"message": "x" * LIMIT, "request_id": "r"})
    _assert_413(
        await lone_gateway.post(route, content=body, headers={"content-type": "application/json"})
    )


async def test_declared_length_is_answered_before_the_body_is_read() -> None:
    app = create_app(GatewaySettings(api_server={"max_body_bytes": LIMIT}))
    sent: list[dict] = []

    async def receive() -> dict:
        # Only the drain reads, once the whole 413 is out.
        assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
        return {"type": "http.request", "body": b"x", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/chat",
        "raw_path": b"/api/chat",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-length", b"40000000"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    await app(scope, receive, send)
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["code"] == "payload_too_large"
    assert sent[2] == {"type": "http.response.body", "body": b"", "more_body": False}


async def test_chunked_body_is_cut_off_at_the_limit_and_the_rest_drained(
    lone_gateway: httpx.AsyncClient,
) -> None:
    pulled = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal pulled
        yield b'{"message": "'
        for _ in range(1000):
            pulled += 1
            yield b"x" * 1024
        yield b'"}'

    r = await lone_gateway.post(
        "/api/chat", content=chunks(), headers={"content-type": "application/json"}
    )
    _assert_413(r)
    assert pulled == 1000  # read to the end (and dropped), so the client sees the 413


async def test_body_at_the_limit_passes(lone_gateway: httpx.AsyncClient) -> None:
    body = json.dumps({"message": "x"})
    body += " " * (LIMIT - len(body))
    r = await lone_gateway.post(
        "/api/chat", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == 503, r.text  # past the limit and validation: no service behind it


async def test_three_megabytes_is_413_by_default(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/chat", json={"message": "x" * 3_000_000}, headers=AUTH)
    _assert_413(r)


async def test_grpc_limits_follow_the_body_limit(tmp_path) -> None:
    gateway = dict(channel_options(GatewaySettings(api_server={"max_body_bytes": 10_000})))
    service = dict(
        server_options(service_settings(tmp_path, api_server={"max_body_bytes": 10_000}))
    )
    assert gateway["grpc.max_send_message_length"] == grpc_request_limit(10_000)
    assert service["grpc.max_receive_message_length"] == grpc_request_limit(10_000)
    assert gateway["grpc.max_receive_message_length"] == service["grpc.max_send_message_length"]


async def test_largest_body_is_not_refused_by_grpc(tmp_path) -> None:
    """A body just under the limit, all JSON escapes, reaches the service (not 429 from gRPC)."""
    from service.server import running_service
    from tests.gateway.conftest import _client, gateway_settings

    settings = service_settings(
        tmp_path, api={"provider": "ollama", "max_message_chars": 3_000_000}
    )
    async with running_service(settings) as running:
        async for c in _client(gateway_settings(running.port)):
            message = "é\\n" * 500_000  # 4 bytes of JSON, 3 of UTF-8 each
            body = '{"message": "' + message + '"}'
            assert len(body.encode()) < 2 * 1024 * 1024
            r = await c.post(
                "/api/chat", content=body, headers={**AUTH, "content-type": "application/json"}
            )
            assert r.status_code == 503, r.text  # the provider is down; nothing refused the size
