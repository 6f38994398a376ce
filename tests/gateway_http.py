"""The suite's HTTP clients of the gateway: every answer they get is held to /openapi.json.

Tests reach the gateway through these and nothing else (tests/test_gateway_http.py
keeps it so), whether it runs in process (an ASGI app) or as a subprocess on a
socket. A client of anything else (a fake provider, the service's metrics port)
is plain httpx, marked ``# not the gateway``.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.openapi_check import CheckedAsyncTransport, CheckedTransport, gateway_check


def _limits(limits: httpx.Limits | None) -> dict[str, Any]:
    # A client given a transport ignores its own ``limits``: they go to the transport.
    return {} if limits is None else {"limits": limits}


def gateway_client(
    base_url: str = "", *, limits: httpx.Limits | None = None, **kw: Any
) -> httpx.Client:
    """A client of a gateway listening on a socket."""
    inner = httpx.HTTPTransport(**_limits(limits))
    return httpx.Client(base_url=base_url, transport=CheckedTransport(inner, gateway_check()), **kw)


def gateway_async_client(
    base_url: str = "", *, limits: httpx.Limits | None = None, **kw: Any
) -> httpx.AsyncClient:
    """An async client of a gateway listening on a socket."""
    inner = httpx.AsyncHTTPTransport(**_limits(limits))
    transport = CheckedAsyncTransport(inner, gateway_check())
    return httpx.AsyncClient(base_url=base_url, transport=transport, **kw)


def gateway_app_client(
    app: Any, *, raise_app_exceptions: bool = True, **kw: Any
) -> httpx.AsyncClient:
    """An async client of a gateway app in this process (lifespan run by the caller)."""
    inner = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    transport = CheckedAsyncTransport(inner, gateway_check())
    return httpx.AsyncClient(base_url="http://gateway", transport=transport, **kw)


def gateway_request(method: str, url: str, *, timeout: float = 5.0, **kw: Any) -> httpx.Response:
    """One request on a connection of its own, like ``httpx.request``."""
    with gateway_client(timeout=timeout) as client:
        return client.request(method, url, **kw)


def gateway_get(url: str, **kw: Any) -> httpx.Response:
    return gateway_request("GET", url, **kw)


def gateway_post(url: str, **kw: Any) -> httpx.Response:
    return gateway_request("POST", url, **kw)
