"""The loopback server under the fakes: 127.0.0.1, a random free port, its own thread and loop.

Tests drive it from sync or async code alike: a test's event loop blocking
does not stall the fake, and the fake's records (requests, disconnects,
in-flight counts) are safe to read from the test's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Self

from tests.fakes.http import Exchange, HttpConnection, RecordedRequest

__all__ = ["Exchange", "LoopbackServer", "RecordedRequest"]


class LoopbackServer:
    """Base of the fakes: serves HTTP/1.1 on 127.0.0.1 from a thread with its own event loop."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.requests: list[RecordedRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.connections_opened = 0
        self._lock = threading.Lock()
        self._connections: set[HttpConnection] = set()
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
        server = await loop.create_server(lambda: HttpConnection(self), self.host, self.port)
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
