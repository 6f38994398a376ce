"""One HTTP/1.1 connection for LeanTransport: an asyncio.Protocol fed to httptools' C parser."""

from __future__ import annotations

import asyncio
from typing import Protocol, cast

import httptools
import httpx

Origin = tuple[str, str, int]


class Pool(Protocol):
    """What a connection tells its pool."""

    def forget(self, conn: Connection) -> None: ...


# Unread body above this stops reading the socket, so a fast server cannot fill memory.
_HIGH_WATER = 256 * 1024


class Connection(asyncio.Protocol):
    """One HTTP/1.1 connection carrying one exchange at a time; parser callbacks fill it."""

    def __init__(self, origin: Origin, pool: Pool) -> None:
        self.origin = origin
        self._pool = pool
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport  # set by connection_made, before anyone uses it
        self._parser: httptools.HttpResponseParser | None = None
        self._waiter: asyncio.Future[None] | None = None
        # One timer per connection, re-armed lazily, rather than one per wait (see _check).
        self._timer: asyncio.TimerHandle | None = None
        self._read_s: float | None = None
        self._due = 0.0
        self.reused = self.lost = self.idle = False
        self.idle_since = 0.0
        self._start(head_only=False)

    def _start(self, *, head_only: bool) -> None:
        self.status = 0
        self.version = self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = self.complete = self.keep_alive = self.got_bytes = False
        self.error: httpx.TransportError | None = None
        self._head_only = head_only
        self._chunks: list[bytes] = []
        self._buffered = 0

    def rest(self) -> None:
        """Go idle: reading on (to see the server close), any byte now is out of step."""
        self._parser = None
        if self._buffered > _HIGH_WATER:  # a whole body was left unread
            self.transport.resume_reading()

    def close(self) -> None:
        self.transport.close()

    # --- the exchange, driven by the caller ------------------------------------

    async def send(self, payload: bytes, *, head_only: bool, read_s: float | None) -> None:
        """Write one request and wait for the head of its response."""
        if self.lost or self.transport.is_closing():
            raise httpx.WriteError("the connection was closed")
        self._start(head_only=head_only)
        self._read_s = read_s
        self._parser = httptools.HttpResponseParser(self)
        try:
            self.transport.write(payload)
        except (OSError, RuntimeError) as exc:
            raise httpx.WriteError(str(exc) or type(exc).__name__) from exc
        while not self.head_done:
            if self.error is not None:
                raise self.error
            await self._wait()

    async def next_body(self) -> bytes | None:
        """The body bytes that arrived since the last call (waiting for some); None at the end."""
        while not self._chunks:
            if self.complete:
                return None
            if self.error is not None:
                raise self.error
            await self._wait()
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        if self._buffered > _HIGH_WATER:  # on_body paused reading
            self.transport.resume_reading()
        self._buffered = 0
        return data

    async def _wait(self) -> None:
        waiter = self._waiter = self.loop.create_future()
        if self._read_s is not None:
            self._due = self.loop.time() + self._read_s
            if self._timer is None or self._timer.when() > self._due:
                if self._timer is not None:
                    self._timer.cancel()
                self._timer = self.loop.call_at(self._due, self._check)
        try:
            await waiter
        finally:
            self._waiter = None

    def _check(self) -> None:
        """Time out the current wait if it is due, else sleep until it would be."""
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self.loop.time() < self._due:
            self._timer = self.loop.call_at(self._due, self._check)
        else:
            waiter.set_exception(httpx.ReadTimeout(f"no data from the server in {self._read_s} s"))

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: httpx.TransportError) -> None:
        if self.complete:  # the message already ended; only reuse is off
            self.keep_alive = False
        elif self.error is None:
            self.error = error
            self._wake()

    # --- asyncio.Protocol --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._parser is None:  # bytes while idle: out of step with the server
            self.close()
            return
        self.got_bytes = True
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed HTTP response: {exc}"))
            self.close()

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost settles the exchange

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._timer is not None:
            self._timer.cancel()
        self._pool.forget(self)
        if self._parser is None or self.complete:
            return
        if self.head_done and exc is None and self._until_close():
            self.complete = True  # a close-delimited body ends with the connection
            self._wake()
        elif exc is not None:
            self._fail(httpx.ReadError(str(exc) or type(exc).__name__))
        elif self.head_done:
            self._fail(httpx.RemoteProtocolError("connection closed before the body was complete"))
        else:
            self._fail(httpx.RemoteProtocolError("server disconnected without sending a response"))

    def _until_close(self) -> bool:
        """Whether the body is delimited by the end of the connection (no length, not chunked)."""
        if self._head_only or self.status in (204, 304):
            return False
        names = {name.lower(): value for name, value in self.headers}
        return (
            b"content-length" not in names
            and b"chunked" not in names.get(b"transfer-encoding", b"").lower()
        )

    # --- httptools callbacks ----------------------------------------------------------

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = cast(httptools.HttpResponseParser, self._parser)
        self.status = parser.get_status_code()
        if 100 <= self.status < 200:
            return  # an interim response; the real one follows
        self.head_done = True
        self.version = b"HTTP/" + parser.get_http_version().encode()
        if self._head_only:  # llhttp would wait for the body a HEAD response never has
            self.complete = True
            self.keep_alive = parser.should_keep_alive()
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        before, self._buffered = self._buffered, self._buffered + len(body)
        if before <= _HIGH_WATER < self._buffered:
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if not self.head_done:  # the end of an interim response
            self.headers = []
            self.reason = b""
        elif not self.complete:
            self.keep_alive = cast(httptools.HttpResponseParser, self._parser).should_keep_alive()
            self.complete = True
            self._wake()


async def encode_request(request: httpx.Request) -> bytes:
    """Request line, headers (httpx has set Host and the body framing) and the body."""
    try:
        body = request.content
    except httpx.RequestNotRead:
        body = await request.aread()
        if request.headers.get("transfer-encoding", "").lower() == "chunked":
            body = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
    parts = [request.method.encode("ascii"), b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
    for name, value in request.headers.raw:
        parts += (name, b": ", value, b"\r\n")
    parts += (b"\r\n", body)
    return b"".join(parts)
