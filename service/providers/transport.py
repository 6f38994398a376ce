"""LeanTransport: HTTP/1.1 for httpx over asyncio, parsed by httptools, with a small pool.

httpcore + h11 + anyio cost several times the CPU of the rest of a streamed request,
and httpcore's pool works per open connection on every request. Here: one
asyncio.Protocol per connection feeding the C parser, idle connections per origin
(last in, first out), a semaphore for the limit. No proxies, HTTP/2 or upgrades.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
from typing import Self

import httpx

from service.providers.http11 import Connection, Origin, encode_request

_DEFAULT_PORTS = {"http": 80, "https": 443}


class _Body(httpx.AsyncByteStream):
    """A response body as it arrives; its end or its closing hands the connection back."""

    def __init__(self, pool: LeanTransport, conn: Connection) -> None:
        self._pool = pool
        self._conn: Connection | None = conn

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> bytes:
        if self._conn is None:
            raise StopAsyncIteration
        try:
            data = await self._conn.next_body()
        except BaseException:
            self._settle(reusable=False)
            raise
        if data is None:
            self._settle(reusable=True)
            raise StopAsyncIteration
        return data

    async def aclose(self) -> None:
        # Closed before its end: only closing the socket stops the server's work.
        self._settle(reusable=self._conn is not None and self._conn.complete)

    def _settle(self, *, reusable: bool) -> None:
        if self._conn is not None:
            self._pool._hand_back(self._conn, reusable=reusable)
            self._conn = None


class LeanTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 with keep-alive for httpx: at most ``max_connections`` open, idle ones reused."""

    def __init__(
        self, *, limits: httpx.Limits | None = None, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        limits = limits or httpx.Limits()
        most, idle = limits.max_connections, limits.max_keepalive_connections
        self._max_open = sys.maxsize if most is None else most
        self._max_idle = sys.maxsize if idle is None else idle
        self._expiry = limits.keepalive_expiry
        self._slots = asyncio.Semaphore(self._max_open)
        self._idle: dict[Origin, list[Connection]] = {}
        self._idle_count = 0
        self._open: set[Connection] = set()
        self._ssl = ssl_context
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        port = _DEFAULT_PORTS.get(url.scheme)
        if port is None:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}")
        origin = (url.scheme, url.host, url.port or port)
        timeouts: dict[str, float | None] = request.extensions.get("timeout") or {}
        read_s, head_only = timeouts.get("read"), request.method == "HEAD"
        payload = await encode_request(request)
        await self._take_slot(timeouts.get("pool"))
        conn: Connection | None = None
        try:
            conn = self._take_idle(origin) or await self._connect(origin, timeouts.get("connect"))
            try:
                await conn.send(payload, head_only=head_only, read_s=read_s)
            except httpx.TransportError as exc:
                if isinstance(exc, httpx.TimeoutException) or not conn.reused or conn.got_bytes:
                    raise
                # The server closed this idle connection as we reused it: once more, afresh.
                self._discard(conn)
                conn = await self._connect(origin, timeouts.get("connect"))
                await conn.send(payload, head_only=head_only, read_s=read_s)
        except BaseException:
            if conn is not None:
                self._discard(conn)
            self._slots.release()
            raise
        return httpx.Response(
            conn.status,
            headers=conn.headers,
            stream=_Body(self, conn),
            extensions={"http_version": conn.version, "reason_phrase": conn.reason},
        )

    async def aclose(self) -> None:
        self._closed = True
        conns = list(self._open)
        self._open.clear()
        self._idle.clear()
        self._idle_count = 0
        for conn in conns:
            conn.idle = False
            conn.close()
        if conns:
            await asyncio.sleep(0)  # let connection_lost run, so the sockets are released now
            for conn in conns:
                conn.transport.abort()  # a TLS close may still be waiting for the peer

    # --- the pool ------------------------------------------------------------------

    async def _take_slot(self, pool_s: float | None) -> None:
        if not self._slots.locked():
            await self._slots.acquire()  # returns at once: no timer to arm
            return
        try:
            async with asyncio.timeout(pool_s):
                await self._slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout(f"no free connection within {pool_s} s") from None

    def _take_idle(self, origin: Origin) -> Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        conn = idle.pop()
        conn.idle = False
        self._idle_count -= 1
        if self._expiry is not None and conn.loop.time() - conn.idle_since > self._expiry:
            # The newest idle connection has expired, so the older ones under it have too.
            for old in (conn, *idle):
                old.idle = False
                self._discard(old)
            self._idle_count -= len(idle)
            idle.clear()
            return None
        conn.reused = True
        return conn

    async def _connect(self, origin: Origin, connect_s: float | None) -> Connection:
        if len(self._open) >= self._max_open:
            # This request holds a slot, so fewer than the limit are in use and the rest
            # are idle ones of other origins: close one to stay under the limit.
            idle = next((conns for conns in self._idle.values() if conns), None)
            if idle:
                self._discard(idle[0])
        scheme, host, port = origin
        if scheme == "https" and self._ssl is None:
            # Loading the CA bundle reads files; keep that off the event loop.
            self._ssl = await asyncio.to_thread(ssl.create_default_context)
        tls = self._ssl if scheme == "https" else None
        conn = Connection(origin, self)
        try:
            async with asyncio.timeout(connect_s):
                await conn.loop.create_connection(
                    lambda: conn, host, port, ssl=tls, server_hostname=host if tls else None
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connect to {host}:{port} timed out") from None
        except OSError as exc:  # refused, unresolvable, TLS handshake failed
            text = str(exc) or type(exc).__name__
            if text.startswith("Multiple exceptions"):  # each address of the host failed
                text = f"all connection attempts failed: {text}"
            raise httpx.ConnectError(text) from exc
        self._open.add(conn)
        return conn

    def _hand_back(self, conn: Connection, *, reusable: bool) -> None:
        reusable = reusable and conn.complete and conn.keep_alive and conn.error is None
        if reusable and not conn.lost and not self._closed and self._idle_count < self._max_idle:
            conn.rest()
            conn.idle = True
            conn.idle_since = conn.loop.time()
            self._idle.setdefault(conn.origin, []).append(conn)
            self._idle_count += 1
        else:
            self._discard(conn)
        self._slots.release()

    def _discard(self, conn: Connection) -> None:
        self.forget(conn)
        conn.close()

    def forget(self, conn: Connection) -> None:
        """Take a closing connection off the books; O(1) unless it was idle (then O(idle))."""
        self._open.discard(conn)
        if conn.idle:
            conn.idle = False
            self._idle[conn.origin].remove(conn)
            self._idle_count -= 1
