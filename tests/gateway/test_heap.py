"""A gateway worker leaves what start-up built out of the garbage collector's full walks."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from fastapi import FastAPI

from gateway.app import app_from_environment, create_app
from tests.gateway.conftest import gateway_settings


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


async def started_freezes(app: FastAPI) -> bool:
    async with app.router.lifespan_context(app):
        return gc.get_freeze_count() > 0


async def test_an_app_asked_to_freezes_its_heap_once_started() -> None:
    assert await started_freezes(create_app(gateway_settings(9), freeze_heap=True))


async def test_an_app_in_process_leaves_the_collector_alone() -> None:
    assert not await started_freezes(create_app(gateway_settings(9)))


async def test_the_worker_factory_freezes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_GRPC__ADDRESS", "127.0.0.1:9")
    assert await started_freezes(app_from_environment())
