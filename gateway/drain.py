"""Draining on SIGTERM: refuse new requests, let open ones finish, end the rest cleanly.

uvicorn, on SIGTERM, closes its listening socket at once and then waits for
open connections; a stream still open when that wait runs out is cut. So the
gateway takes SIGTERM first (its handler wraps uvicorn's): it starts draining,
answers new requests ``503 unavailable`` with Retry-After (``/health/ready``
turns 503, so a load balancer moves away), and gives the requests in flight
``api_server.shutdown_grace_s`` to finish. Streams still open then receive an
``error`` event (code ``unavailable``, ``retry_after_s``) and end; only then is
uvicorn's own handler called, and the process exits the usual way. A second
SIGTERM or SIGINT goes straight to uvicorn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import GatewayError
from gateway.routes import error_response

# What a client is told to wait before it retries (another gateway, or this one restarted).
RETRY_AFTER_S = 5.0
# Not refused while draining: the probes say what is happening, the scrape sees it.
OPEN_PATHS = frozenset({"/health/live", "/health/ready", "/metrics"})
# After the grace: how long the streams get to write their error event and end.
_WIND_UP_S = 5.0

log = logging.getLogger("gateway.drain")


def shutting_down() -> GatewayError:
    return GatewayError(
        503, "unavailable", "the gateway is shutting down; retry", retry_after_s=RETRY_AFTER_S
    )


def _nothing() -> None:
    return None


class Drain:
    """The drain state of one app: requests in flight, and the grace's end."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self.draining = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._expired = asyncio.Event()
        self._on_expiry: dict[Callable[[GatewayError], None], None] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def enter(self) -> None:
        self._in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()

    def on_expiry(self, callback: Callable[[GatewayError], None]) -> Callable[[], None]:
        """Call ``callback`` with the error open streams end with when the grace runs out.

        Returns an undo. A callback per open stream, not a waiting task: thousands
        of streams wait for their turn through one gateway.
        """
        if self._expired.is_set():
            callback(shutting_down())
            return _nothing
        self._on_expiry[callback] = None

        def undo() -> None:
            self._on_expiry.pop(callback, None)

        return undo

    def begin(self, then: Callable[[], None] | None = None) -> asyncio.Task[None]:
        """Start draining (once); ``then`` runs when the requests in flight are done."""
        if self._task is None:
            self.draining = True
            if self._in_flight == 0:
                self._idle.set()
            log.info("draining: %d requests in flight", self._in_flight)
            self._task = asyncio.get_running_loop().create_task(self._run(then))
        return self._task

    async def _run(self, then: Callable[[], None] | None) -> None:
        try:
            await asyncio.wait_for(self._idle.wait(), self.grace_s)
        except TimeoutError:
            log.info("grace over: ending %d open requests", self._in_flight)
            self._expired.set()
            callbacks, self._on_expiry = list(self._on_expiry), {}
            for callback in callbacks:
                callback(shutting_down())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), _WIND_UP_S)
        if then is not None:
            then()


class DrainMiddleware:
    """Counts requests in flight; while draining, refuses new ones with 503."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if self.drain.draining:
            await error_response(shutting_down())(scope, receive, send)
            return
        self.drain.enter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.drain.leave()


def install_sigterm(drain: Drain) -> Callable[[], None]:
    """Put the drain in front of the current SIGTERM handler (uvicorn's); returns the undo.

    Called from the lifespan, which uvicorn runs after it installed its handlers.
    """
    loop = asyncio.get_running_loop()
    previous: Any = signal.getsignal(signal.SIGTERM)

    def chain(sig: int, frame: FrameType | None) -> None:
        if callable(previous):
            previous(sig, frame)
        else:  # no Python handler before ours: behave as the default would
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(sig)

    def on_sigterm(sig: int, frame: FrameType | None) -> None:
        if drain.draining:
            chain(sig, frame)
            return
        loop.call_soon_threadsafe(drain.begin, lambda: chain(sig, None))

    signal.signal(signal.SIGTERM, on_sigterm)

    def undo() -> None:
        if signal.getsignal(signal.SIGTERM) is on_sigterm:
            signal.signal(signal.SIGTERM, previous)

    return undo
