"""A small HTTP/1.1 server on 127.0.0.1, run in its own thread, under the provider fakes.

Hand-written (not uvicorn) for exact control of the bytes on the wire: a body
can be cut into arbitrary pieces, stopped without its end, or left hanging,
and a client closing its connection is noticed at once (``connection_lost``),
even while a handler sleeps. Keep-alive and chunked responses are supported,
so httpx and the anthropic SDK talk to it as to a real server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

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

    def __init__(self, conn: _Connection, request: RecordedRequest) -> None:
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


class _Connection(asyncio.Protocol):
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


class LoopbackServer:
    """Base of the fakes: serves HTTP/1.1 on 127.0.0.1 from a thread with its own event loop."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.requests: list[RecordedRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._connections: set[_Connection] = set()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._failure: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # --- lifecycle ---------------------------------------------------------

    def start(self) -> Self:
        if self._thread is not None:
            return self
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name=type(self).__name__, daemon=True
        )
        self._thread.start()
        if not ready.wait(10) or self._failure is not None:
            raise RuntimeError(f"{type(self).__name__} did not start: {self._failure!r}")
        return self

    def stop(self) -> None:
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None or loop is None or stop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop already ended
            loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main(ready))
            loop.run_until_complete(loop.shutdown_asyncgens())
        except BaseException as exc:
            self._failure = exc
            ready.set()
        finally:
            loop.close()

    async def _main(self, ready: threading.Event) -> None:
        self._stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Connection(self), self.host, self.port)
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            connections = list(self._connections)
            for conn in connections:
                if conn.transport is not None:
                    conn.transport.abort()
            tasks = [c.task for c in connections if c.task is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await server.wait_closed()

    # --- what subclasses implement ------------------------------------------

    async def handle(self, exchange: Exchange) -> None:
        raise NotImplementedError

    # --- records ---------------------------------------------------------------

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    @contextlib.contextmanager
    def flight(self) -> Iterator[None]:
        """Count a model call as in flight while the block runs."""
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            yield
        finally:
            with self._lock:
                self.in_flight -= 1

    def calls(self, path: str) -> list[RecordedRequest]:
        """The recorded requests to one path, oldest first."""
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def reset_records(self) -> None:
        with self._lock:
            self.requests.clear()
            self.max_in_flight = self.in_flight

    def wait_for_disconnect(self, index: int, timeout: float) -> bool:
        """Block until request ``index`` was abandoned by its client; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                request = self.requests[index] if index < len(self.requests) else None
            if request is not None:
                request.settled.wait(max(0.0, deadline - time.monotonic()))
                return request.disconnected_at is not None
            time.sleep(0.005)
        return False

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Poll ``predicate`` without blocking the caller's event loop; False on timeout."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    async def disconnected(self, index: int, timeout: float = 5.0) -> bool:
        """Async form of ``wait_for_disconnect``."""

        def gone() -> bool:
            with self._lock:
                return (
                    index < len(self.requests) and self.requests[index].disconnected_at is not None
                )

        return await self.wait_until(gone, timeout)

    async def wait_for_in_flight(self, count: int, timeout: float = 5.0) -> bool:
        return await self.wait_until(lambda: self.in_flight >= count, timeout)
