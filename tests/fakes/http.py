"""HTTP/1.1 on one connection for the fakes: request parsing, records, and the response side.

Hand-written (not uvicorn) for exact control of the bytes on the wire: a body
can be cut into arbitrary pieces, stopped without its end, or left hanging,
and a client closing its connection is noticed at once (``connection_lost``),
even while a handler sleeps. Keep-alive and chunked responses are supported,
so httpx and the anthropic SDK talk to it as to a real server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.fakes.server import LoopbackServer

log = logging.getLogger(__name__)

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    529: "Overloaded",
}


@dataclass
class RecordedRequest:
    """One request a fake received, and when it finished or was abandoned by the client."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any
    raw_body: bytes
    received_at: float
    finished_at: float | None = None
    disconnected_at: float | None = None
    settled: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def json(self) -> dict[str, Any]:
        """The JSON body as a dict ({} when there was none)."""
        return self.body if isinstance(self.body, dict) else {}

    def _finish(self) -> None:
        if self.finished_at is None and self.disconnected_at is None:
            self.finished_at = time.monotonic()
        self.settled.set()

    def _abandon(self) -> None:
        if self.finished_at is None and self.disconnected_at is None:
            self.disconnected_at = time.monotonic()
        self.settled.set()


class Exchange:
    """The response side of one request: a whole body, or a chunked stream written in pieces."""

    def __init__(self, conn: HttpConnection, request: RecordedRequest) -> None:
        self._conn = conn
        self.request = request
        self.started = False
        self.done = False

    @property
    def client_gone(self) -> bool:
        return self._conn.gone.is_set()

    async def pause(self, seconds: float) -> bool:
        """Sleep unless the client leaves first; True when the client is still there."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return not self.client_gone
        try:
            await asyncio.wait_for(self._conn.gone.wait(), seconds)
        except TimeoutError:
            return True
        return False

    async def wait_gone(self) -> None:
        """Send nothing until the client closes the connection (a hung upstream)."""
        await self._conn.gone.wait()

    def respond(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Send a complete response with a Content-Length."""
        head = self._head(status, content_type, headers, {"content-length": str(len(body))})
        self._conn.send(head + body)
        self.started = self.done = True
        self.request._finish()

    def respond_json(self, status: int, obj: object, headers: dict[str, str] | None = None) -> None:
        self.respond(status, json.dumps(obj).encode(), "application/json", headers)

    def start(self, status: int, content_type: str, headers: dict[str, str] | None = None) -> None:
        """Send the head of a chunked response; the body follows through ``write``."""
        self._conn.send(self._head(status, content_type, headers, {"transfer-encoding": "chunked"}))
        self.started = True

    async def write(self, data: bytes, *, last: bool = False) -> bool:
        """Send one chunk (and the end of the body when ``last``); False if the client left."""
        if self.client_gone:
            return False
        frame = b"%x\r\n%s\r\n" % (len(data), data) if data else b""
        if last:
            frame += b"0\r\n\r\n"
            self.done = True
            self.request._finish()
        if frame:
            self._conn.send(frame)
        # Yield so the bytes leave now and a disconnect is seen between writes.
        await asyncio.sleep(0)
        return not self.client_gone

    async def finish(self) -> None:
        await self.write(b"", last=True)

    def abort(self) -> None:
        """Close the connection mid-body, as an upstream that dies would."""
        self.done = True
        self.request._finish()
        self._conn.close()

    def _head(
        self,
        status: int,
        content_type: str,
        headers: dict[str, str] | None,
        framing: dict[str, str],
    ) -> bytes:
        lines = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}",
            f"content-type: {content_type}",
        ]
        lines += [f"{k}: {v}" for k, v in {**framing, **(headers or {})}.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class HttpConnection(asyncio.Protocol):
    """One client connection: buffers what arrives and serves requests one after another."""

    def __init__(self, server: LoopbackServer) -> None:
        self._server = server
        self._buffer = bytearray()
        self._readable = asyncio.Event()
        self._eof = False
        self.gone = asyncio.Event()
        self.transport: asyncio.Transport | None = None
        self.current: RecordedRequest | None = None
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._server._connections.add(self)
        self._server.connections_opened += 1
        self.task = asyncio.get_running_loop().create_task(self._serve())

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._readable.set()

    def eof_received(self) -> bool:
        self._eof = True
        self._readable.set()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._readable.set()
        self.gone.set()
        if self.current is not None:
            self.current._abandon()
        self._server._connections.discard(self)

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def _take_until(self, marker: bytes) -> bytes | None:
        while (index := self._buffer.find(marker)) < 0:
            if self._eof:
                return None
            self._readable.clear()
            await self._readable.wait()
        end = index + len(marker)
        data = bytes(self._buffer[:end])
        del self._buffer[:end]
        return data

    async def _take(self, size: int) -> bytes | None:
        while len(self._buffer) < size:
            if self._eof:
                return None
            self._readable.clear()
            await self._readable.wait()
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def _serve(self) -> None:
        try:
            while not self.gone.is_set():
                request = await self._read_request()
                if request is None:
                    return
                self.current = request
                self._server._record(request)
                exchange = Exchange(self, request)
                try:
                    await self._server.handle(exchange)
                except Exception:
                    log.exception("fake server handler failed")
                    if not exchange.started:
                        exchange.respond(500, b"fake server handler failed", "text/plain")
                    else:
                        exchange.abort()
                if not exchange.done:
                    await exchange.finish()
                self.current = None
                if request.headers.get("connection", "").lower() == "close":
                    return
        finally:
            self.close()

    async def _read_request(self) -> RecordedRequest | None:
        head = await self._take_until(b"\r\n\r\n")
        if head is None:
            return None
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, target, _version = request_line.split(" ", 2)
        headers: dict[str, str] = {}
        for line in header_lines:
            if ":" in line:
                name, value = line.split(":", 1)
                name = name.strip().lower()
                value = value.strip()
                headers[name] = f"{headers[name]}, {value}" if name in headers else value
        raw = await self._take(int(headers.get("content-length", "0") or 0))
        if raw is None:
            return None
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        path, _, query = target.partition("?")
        return RecordedRequest(method, path, query, headers, body, raw, time.monotonic())
