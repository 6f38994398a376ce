"""The streamable HTTP transport of an MCP server, with its messages bounded by size.

An answer comes either as one JSON body or as an SSE stream. The SDK bounds
an SSE event (``max_sse_event_size``) but reads a JSON body whole; here the
body is read through a counter that stops at ``max_message_bytes``, so the
call ends with an error naming the limit instead of holding the service.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx2
from mcp.client.streamable_http import streamable_http_client

# The SDK's own client settings (30 s to connect, 300 s to read a stream).
_TIMEOUT = httpx2.Timeout(30.0, read=300.0)


class MessageTooLarge(httpx2.StreamError):
    """An answer longer than the server's ``max_message_bytes``."""


class _CountedBody(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, limit: int, url: str) -> None:
        self._inner = inner
        self._limit = limit
        self._url = url

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self._inner:
            seen += len(chunk)
            if seen > self._limit:
                raise MessageTooLarge(
                    f"the answer of {self._url} is over max_message_bytes={self._limit}"
                )
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class _BoundedTransport(httpx2.AsyncBaseTransport):
    """Passes requests on; a JSON answer's body is read through a byte counter."""

    def __init__(self, limit: int) -> None:
        self._inner = httpx2.AsyncHTTPTransport()
        self._limit = limit

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._inner.handle_async_request(request)
        if not response.headers.get("content-type", "").startswith("application/json"):
            return response  # SSE: the SDK bounds each event itself
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        return httpx2.Response(
            response.status_code,
            headers=response.headers,
            stream=_CountedBody(response.stream, self._limit, str(request.url)),
            extensions=response.extensions,
            request=request,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


@contextlib.asynccontextmanager
async def bounded_http(
    url: str, headers: dict[str, str], *, max_message_bytes: int
) -> AsyncIterator[tuple[Any, Any]]:
    """The session's (read, write) streams to ``url``; answers over the limit are errors."""
    async with (
        httpx2.AsyncClient(
            headers=headers, timeout=_TIMEOUT, transport=_BoundedTransport(max_message_bytes)
        ) as client,
        streamable_http_client(
            url, http_client=client, max_sse_event_size=max_message_bytes
        ) as streams,
    ):
        yield streams[0], streams[1]
