"""Helpers for the observability tests: a service on a fake Ollama, a gateway app, a raw stream.

httpx.ASGITransport collects a whole response before it returns, so a test
that must look at the gateway while a stream is open drives the ASGI app
itself (RawStream).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from gateway.app import create_app
from gateway.config import GatewaySettings
from service.server import RunningService, running_service
from tests.fakes.ollama import FakeOllama
from tests.gateway.conftest import AUTH, service_settings
from tests.gateway_http import gateway_app_client


@asynccontextmanager
async def service_on(fake: FakeOllama, tmp_path: Path) -> AsyncIterator[RunningService]:
    settings = service_settings(tmp_path, ollama={"url": fake.url, "model": "llama3.2"})
    async with running_service(settings) as running:
        yield running


@asynccontextmanager
async def gateway(port: int, **kw: Any) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app (lifespan running) and a client of it; ``kw`` goes to create_app."""
    settings = GatewaySettings(grpc={"address": f"127.0.0.1:{port}"}, **kw.pop("sections", {}))
    app = create_app(settings, **kw)
    async with app.router.lifespan_context(app), gateway_app_client(app, headers=AUTH) as client:
        yield app, client


_SAMPLE = re.compile(r'^(\w+)(\{(?:[^"}]|"[^"]*")*\})? (\S+)$')


def samples(text: str) -> dict[str, float]:
    """``name{labels}`` -> value, for every sample line of a text exposition."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            out[f"{match.group(1)}{match.group(2) or ''}"] = float(match.group(3))
    return out


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the one sample of ``name`` with exactly ``labels`` (any order), or None."""
    for key, value in samples(text).items():
        base, _, rest = key.partition("{")
        found = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        if base == name and found == labels:
            return value
    return None


class RawStream:
    """One POST /api/chat/stream driven straight through the ASGI app."""

    def __init__(self, app: FastAPI, body: dict[str, Any], headers: dict[str, str]) -> None:
        raw = json.dumps(body).encode()
        self.scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/api/chat/stream",
            "raw_path": b"/api/chat/stream",
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"gateway"),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(raw)).encode()),
                *((k.lower().encode(), v.encode()) for k, v in headers.items()),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("gateway", 80),
        }
        self._body = raw
        self._sent_body = False
        self._gone = asyncio.Event()
        self.messages: list[dict[str, Any]] = []
        self._changed = asyncio.Condition()
        self.task = asyncio.create_task(app(self.scope, self._receive, self._send))

    async def _receive(self) -> dict[str, Any]:
        if not self._sent_body:
            self._sent_body = True
            return {"type": "http.request", "body": self._body, "more_body": False}
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: dict[str, Any]) -> None:
        async with self._changed:
            self.messages.append(message)
            self._changed.notify_all()

    async def wait_for(self, predicate: Any) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: predicate(self)), 20)

    @property
    def started(self) -> dict[str, Any] | None:
        return next((m for m in self.messages if m["type"] == "http.response.start"), None)

    @property
    def text(self) -> str:
        return b"".join(m.get("body", b"") for m in self.messages).decode()

    def disconnect(self) -> None:
        self._gone.set()
