"""/health/ready through a PostgreSQL outage, with and without the probe's token.

The service (in process, auth on) stores into a private cluster this module
stops; the gateway is driven through its ASGI app. A probe without a token
never reaches GetStatus, so only the service's store health entry (kept by a
ping) can tell it about the outage; after the restart both answer ready again
without restarting anything.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.server import running_service
from tests.fakes.ollama import FakeOllama
from tests.gateway.conftest import service_settings
from tests.gateway.obs_helpers import gateway
from tests.store.private_postgres import PrivateCluster, private_cluster

NO_TOKEN = {"Authorization": ""}


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    with private_cluster() as started:
        yield started


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama() as f:
        yield f


async def _ready_until(
    client: httpx.AsyncClient, want: int, headers: dict[str, str] | None = None
) -> httpx.Response:
    """Probe until the answer has status ``want`` (the gateway keeps an answer for 1 s)."""
    deadline = time.monotonic() + 30
    while True:
        reply = await client.get("/health/ready", headers=headers)
        if reply.status_code == want:
            return reply
        assert time.monotonic() < deadline, reply.text
        await asyncio.sleep(0.1)


async def test_ready_says_store_unavailable_during_an_outage_with_or_without_a_token(
    cluster: PrivateCluster, fake: FakeOllama, tmp_path: Path
) -> None:
    settings = service_settings(
        tmp_path,
        ollama={"url": fake.url, "model": "llama3.2"},
        store={"url": cluster.url},
    )
    # Two gateways: each keeps its last answer for a second, whoever asked.
    async with (
        running_service(settings) as svc,
        gateway(svc.port) as (_, client),
        gateway(svc.port) as (_, tokenless),
    ):
        assert (await _ready_until(client, 200)).json()["provider"] == "ollama"
        assert (await _ready_until(tokenless, 200, NO_TOKEN)).json()["provider"] == "unchecked"

        await asyncio.to_thread(cluster.stop)
        try:
            for probe, headers in ((tokenless, NO_TOKEN), (client, None)):
                down = await _ready_until(probe, 503, headers)
                body = down.json()
                assert body["detail"].startswith("store unavailable"), body
                assert body["reason"] == "STORE_UNAVAILABLE" and body["code"] == "unavailable"
            # Liveness and the service's own health are not the database's.
            assert (await client.get("/health/live")).status_code == 200
            assert (await client.get("/health")).status_code == 200
        finally:
            await asyncio.to_thread(cluster.start)

        await _ready_until(tokenless, 200, NO_TOKEN)
        assert (await _ready_until(client, 200)).json()["provider"] == "ollama"
