"""/health/live, /health/ready, and the drain: new requests refused, open streams ended cleanly."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.drain import RETRY_AFTER_S
from tests.e2e.queue_helpers import HANG, ReplyBook
from tests.fakes.ollama import FakeOllama
from tests.gateway.conftest import RunningService
from tests.gateway.obs_helpers import RawStream, gateway, service_on


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama() as f:
        yield f


async def test_live_needs_nothing_behind_it(lone_gateway: httpx.AsyncClient) -> None:
    reply = await lone_gateway.get("/health/live")
    assert reply.status_code == 200
    assert reply.json() == {"status": "ok"}


async def test_ready_is_503_without_a_service(lone_gateway: httpx.AsyncClient) -> None:
    reply = await lone_gateway.get("/health/ready")
    assert reply.status_code == 503
    assert reply.json()["code"] == "unavailable"
    assert "unreachable" in reply.json()["detail"]


async def test_ready_is_503_while_the_default_provider_is_unreachable(
    service: RunningService,
) -> None:
    # The conftest's service points Ollama at a port where nothing listens.
    async with gateway(service.port) as (_, client):
        reply = await client.get("/health/ready")
    assert reply.status_code == 503, reply.text
    assert reply.json()["code"] == "unavailable"
    assert "provider" in reply.json()["detail"]


async def test_ready_when_service_and_provider_are_up(fake: FakeOllama, tmp_path: Path) -> None:
    async with service_on(fake, tmp_path) as svc, gateway(svc.port) as (_, client):
        reply = await client.get("/health/ready")
        # A second probe inside the cache window does not ask again: the service is gone now.
        await svc.server.stop(None)
        again = await client.get("/health/ready")
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"status": "ok", "service": "serving", "provider": "ollama"}
    assert again.status_code == 200


async def test_draining_refuses_new_requests_and_is_not_ready(
    fake: FakeOllama, tmp_path: Path
) -> None:
    async with service_on(fake, tmp_path) as svc, gateway(svc.port) as (app, client):
        assert (await client.get("/health/ready")).status_code == 200
        finished = asyncio.Event()
        app.state.drain.begin(finished.set)
        await asyncio.wait_for(finished.wait(), 5)  # nothing in flight: done at once
        refused = await client.get("/api/status", headers={"X-Request-ID": "late-1"})
        ready = await client.get("/health/ready")
        live = await client.get("/health/live")
        scrape = await client.get("/metrics")
    assert refused.status_code == 503
    assert refused.json()["code"] == "unavailable"
    assert refused.headers["retry-after"] == str(int(RETRY_AFTER_S))
    assert refused.headers["x-request-id"] == "late-1"
    assert ready.status_code == 503
    assert live.status_code == 200
    assert scrape.status_code == 200


async def test_a_stream_open_past_the_grace_ends_with_an_unavailable_event(
    fake: FakeOllama, tmp_path: Path
) -> None:
    ReplyBook(fake).set("hang on", HANG)
    sections = {"api_server": {"shutdown_grace_s": 0.2}}
    async with (
        service_on(fake, tmp_path) as svc,
        gateway(svc.port, sections=sections) as (app, client),
    ):
        stream = RawStream(app, {"message": "hang on", "user_id": "ann"}, dict(client.headers))
        await stream.wait_for(lambda s: "event: start" in s.text)
        finished = asyncio.Event()
        app.state.drain.begin(finished.set)
        await asyncio.wait_for(stream.task, 10)
        await asyncio.wait_for(finished.wait(), 10)
    frames = [f for f in stream.text.split("\n\n") if f.startswith("id:")]
    last = frames[-1].splitlines()
    assert last[0] == f"id: {len(frames)}" and last[1] == "event: error"
    data = json.loads(last[2].removeprefix("data: "))
    assert data["code"] == "unavailable"
    assert data["retry_after_s"] == RETRY_AFTER_S
    assert stream.messages[-1] == {
        "type": "http.response.body",
        "body": stream.messages[-1]["body"],
        "more_body": False,
    }
