"""CORS: browser code may read the headers a client needs, Retry-After included."""

from __future__ import annotations

import httpx


async def test_a_browser_may_read_retry_after_and_the_request_id(
    lone_gateway: httpx.AsyncClient,
) -> None:
    r = await lone_gateway.post(
        "/api/chat", json={"message": "hi"}, headers={"Origin": "https://app.example"}
    )
    assert r.status_code == 503  # no service behind this gateway
    assert r.headers["access-control-allow-origin"] == "*"
    exposed = {h.strip().lower() for h in r.headers["access-control-expose-headers"].split(",")}
    assert {"retry-after", "x-request-id"} <= exposed
