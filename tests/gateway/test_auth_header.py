"""A 401 names its scheme: WWW-Authenticate: Bearer, with error="invalid_token" (RFC 6750)
when a token was presented and refused."""

from __future__ import annotations

import httpx
import pytest


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/status", None),
        ("GET", "/api/conversations", None),
        ("POST", "/api/chat", {"message": "hi"}),
        ("POST", "/api/chat/stream", {"message": "hi"}),
        ("POST", "/api/queue/status", {"request_id": "r_1"}),
    ],
)
@pytest.mark.parametrize(
    ("auth", "challenge"),
    [(None, "Bearer"), ("Bearer wrong-token", 'Bearer error="invalid_token"')],
)
async def test_401_carries_www_authenticate_bearer(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    body: dict | None,
    auth: str | None,
    challenge: str,
) -> None:
    headers = {"Authorization": auth} if auth else {}
    r = await client.request(method, path, json=body, headers=headers)
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == challenge
    assert r.json()["code"] == "unauthenticated"
