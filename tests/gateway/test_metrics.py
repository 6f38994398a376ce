"""GET /metrics: counters and histograms move with traffic, labels are route templates."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.queue_helpers import HANG, ReplyBook
from tests.fakes.ollama import FakeOllama
from tests.gateway.obs_helpers import RawStream, gateway, sample, service_on


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama() as f:
        yield f


async def test_a_chat_moves_the_counters_and_the_histogram(
    fake: FakeOllama, tmp_path: Path
) -> None:
    async with service_on(fake, tmp_path) as svc, gateway(svc.port) as (_, client):
        before = (await client.get("/metrics")).text
        assert (
            sample(
                before, "agent_http_requests_total", route="/api/chat", method="POST", status="200"
            )
            is None
        )
        reply = await client.post("/api/chat", json={"message": "hello", "user_id": "ann"})
        assert reply.status_code == 200, reply.text
        await client.get(f"/api/conversations/{uuid.uuid4().hex}", params={"user_id": "ann"})
        await client.get("/no/such/path")
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    labels = {"route": "/api/chat", "method": "POST", "status": "200"}
    assert sample(text, "agent_http_requests_total", **labels) == 1.0
    assert sample(text, "agent_http_request_duration_seconds_count", route="/api/chat") == 1.0
    assert (
        sample(text, "agent_http_request_duration_seconds_bucket", route="/api/chat", le="+Inf")
        == 1.0
    )
    template = "/api/conversations/{conversation_id}"
    assert (
        sample(text, "agent_http_requests_total", route=template, method="GET", status="404") == 1.0
    )
    assert (
        sample(text, "agent_http_requests_total", route="unmatched", method="GET", status="404")
        == 1.0
    )
    # Bounded labels: no raw path, no user id; a scrape does not count itself.
    assert "/no/such/path" not in text
    assert "ann" not in text
    assert 'route="/metrics"' not in text


async def test_active_streams_counts_an_open_stream(fake: FakeOllama, tmp_path: Path) -> None:
    ReplyBook(fake).set("hang on", HANG)
    async with service_on(fake, tmp_path) as svc, gateway(svc.port) as (app, client):
        stream = RawStream(app, {"message": "hang on", "user_id": "ann"}, dict(client.headers))
        await stream.wait_for(lambda s: s.started is not None)
        assert stream.started is not None and stream.started["status"] == 200
        during = (await client.get("/metrics")).text
        stream.disconnect()
        await asyncio_wait(stream)
        after = (await client.get("/metrics")).text
    assert sample(during, "agent_active_streams") == 1.0
    assert sample(after, "agent_active_streams") == 0.0
    assert (
        sample(after, "agent_http_request_duration_seconds_count", route="/api/chat/stream") == 1.0
    )


async def asyncio_wait(stream: RawStream) -> None:
    import asyncio

    await asyncio.wait_for(stream.task, 20)


async def test_promtool_accepts_the_exposition(fake: FakeOllama, tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not on PATH (Debian: apt-get install prometheus)")
    async with service_on(fake, tmp_path) as svc, gateway(svc.port) as (_, client):
        await client.post("/api/chat", json={"message": "hello", "user_id": "ann"})
        await client.get("/health/live")
        text = (await client.get("/metrics")).text
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
