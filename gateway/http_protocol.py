"""uvicorn's httptools protocol, with the gateway's JSON 400 and timeouts for slow clients.

A request the HTTP parser refuses (a URL or header block over the parser's
limit, a malformed request line) never reaches the app: uvicorn answers it
with a plain-text 400. This subclass changes only the body of that answer,
so even those clients get ``{"detail": ..., "code": "invalid_argument"}``.

uvicorn has no timeout for a client that connects and sends nothing, trickles
its request headers, or stops sending a body it announced: each such
connection is held open for ever, so a few hundred of them exhaust the
server. Here the request head must be complete within
``api_server.header_timeout_s`` of the connection (or of the previous
response), and its body within ``api_server.body_timeout_s`` of the head;
otherwise the client gets a 408 (when no response has started) and the
connection is closed. A response, however long it streams, is never timed:
the clocks stop when the request has arrived.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# The import path agent-gateway hands to uvicorn (workers import it themselves).
PROTOCOL_PATH = "gateway.http_protocol:JsonErrorHttpToolsProtocol"
# The timeouts reach uvicorn's workers through their environment (the settings' own names).
HEADER_TIMEOUT_ENV = "AGENT_API_SERVER__HEADER_TIMEOUT_S"
BODY_TIMEOUT_ENV = "AGENT_API_SERVER__BODY_TIMEOUT_S"
DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_BODY_TIMEOUT_S = 30.0


def timeouts(environ: Mapping[str, str]) -> tuple[float, float]:
    """(header, body) timeouts in seconds from the environment agent-gateway set up."""
    return (
        float(environ.get(HEADER_TIMEOUT_ENV) or DEFAULT_HEADER_TIMEOUT_S),
        float(environ.get(BODY_TIMEOUT_ENV) or DEFAULT_BODY_TIMEOUT_S),
    )


class JsonErrorHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol whose parser-error answer is JSON, and which sheds slow clients."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout_s, self._body_timeout_s = timeouts(os.environ)
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self._header_timeout_s, "the request headers")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()
        # A request without a body completes in the same parse, which disarms this again.
        self._arm(self._body_timeout_s, "the request body")

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # The next request's head is timed from now, unless it is already in (pipelined).
        if not self.pipeline and not self.transport.is_closing():
            self._arm(self._header_timeout_s, "the request headers")

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired, seconds, what)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, seconds: float, what: str) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is None or cycle.response_complete or not cycle.response_started:
            detail = f"{what} did not arrive within {seconds:g} s; the connection is closed"
            self._send_error(b"408 Request Timeout", detail, "deadline_exceeded")
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        self._send_error(
            b"400 Bad Request",
            f"{msg} (malformed request, or URL/headers too long)",
            "invalid_argument",
        )
        self.transport.close()

    def _send_error(self, status: bytes, detail: str, code: str) -> None:
        body = json.dumps({"detail": detail, "code": code}).encode()
        head = [b"HTTP/1.1 ", status, b"\r\n"]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
