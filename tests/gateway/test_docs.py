"""/docs and /redoc render with no network: every asset is served by the gateway itself."""

from __future__ import annotations

import re

import httpx
import pytest

_URL = re.compile(r"""(?:src|href)=["']([^"']+)["']|url:\s*["']([^"']+)["']""")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_page_names_no_external_host(lone_gateway: httpx.AsyncClient, page: str) -> None:
    r = await lone_gateway.get(page)
    assert r.status_code == 200
    html = r.text
    assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", html, re.IGNORECASE), html
    assets = [a or b for a, b in _URL.findall(html)]
    assert any(a.endswith(".js") for a in assets), html
    for asset in assets:
        loaded = await lone_gateway.get(asset)
        assert loaded.status_code == 200, asset
        assert len(loaded.content) > 1000, asset


async def test_swagger_ui_loads_the_openapi_document(lone_gateway: httpx.AsyncClient) -> None:
    html = (await lone_gateway.get("/docs")).text
    assert "/openapi.json" in html
    assert (await lone_gateway.get("/openapi.json")).status_code == 200
