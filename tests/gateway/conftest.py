"""The gateway app in process (httpx.ASGITransport), with the real service in process behind it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gateway.app import create_app
from gateway.config import GatewaySettings
from service.config import Settings
from service.server import RunningService, running_service
from tests.gateway_http import gateway_app_client

TOKEN = "gateway-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def service_settings(tmp_path: Path, **extra: object) -> Settings:
    sections: dict[str, object] = {
        "grpc": {"address": "127.0.0.1:0", "shutdown_grace_s": 0.5},
        "metrics": {"address": "127.0.0.1:0"},
        "store": {"url": f"sqlite:///{tmp_path / 'agent.db'}"},
        "auth": {"shared_token": TOKEN},
        "api": {"provider": "ollama"},
        "ollama": {"url": "http://127.0.0.1:9"},  # nothing listens: chat turns fail with 503
    }
    return Settings(**{**sections, **extra})


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[RunningService]:
    async with running_service(service_settings(tmp_path)) as running:
        yield running


def gateway_settings(port: int, **api_server: object) -> GatewaySettings:
    return GatewaySettings(grpc={"address": f"127.0.0.1:{port}"}, api_server=api_server)


async def _client(settings: GatewaySettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app), gateway_app_client(app) as client:
        yield client


@pytest.fixture
async def client(service: RunningService) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the gateway, in front of a running service."""
    async for c in _client(gateway_settings(service.port)):
        yield c


@pytest.fixture
async def lone_gateway() -> AsyncIterator[httpx.AsyncClient]:
    """A gateway with no service behind it (port 9 of loopback refuses)."""
    async for c in _client(gateway_settings(9, max_body_bytes=4096)):
        yield c
