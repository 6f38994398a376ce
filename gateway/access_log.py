"""One measurement per HTTP request: the access log line and the HTTP metrics.

Pure ASGI (not BaseHTTPMiddleware, which would buffer a stream): the status
comes from ``http.response.start``, the duration ends when the app returns, so
for a stream it covers the whole stream. The route is the template the router
matched (``/api/conversations/{conversation_id}``) or ``unmatched``: bounded
labels, never a raw path. ``/metrics`` is left out of the metrics (a scrape
would count itself); probes and scrapes log at debug, everything else at info.
The line names the request's user when the request did (``user_id``), never a
token, and no message text.
"""

from __future__ import annotations

import logging
import time
from urllib.parse import parse_qsl

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import request_id
from gateway.metrics import GatewayMetrics

METRICS_PATH = "/metrics"
UNMATCHED = "unmatched"
QUIET_PATHS = frozenset({METRICS_PATH, "/health/live", "/health/ready"})
_EVENT_STREAM = b"text/event-stream"

log = logging.getLogger("gateway.access")


def route_template(scope: Scope) -> str:
    """The matched route's path template, or ``unmatched``."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    app = scope.get("app")
    for candidate in getattr(getattr(app, "router", None), "routes", ()):
        match, _ = candidate.matches(scope)
        if match is not Match.NONE:
            return str(getattr(candidate, "path", UNMATCHED)) or UNMATCHED
    return UNMATCHED


def _query_user(scope: Scope) -> str:
    query = scope.get("query_string", b"")
    if b"user_id=" not in query:
        return ""
    users = [v for k, v in parse_qsl(query.decode("latin-1")) if k == "user_id"]
    return users[0] if users else ""


class AccessMiddleware:
    """Times each request; writes its access line and its metrics."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client gets when the app fails before answering
        streaming = False
        request_id.note_user(_query_user(scope))

        async def observe(message: Message) -> None:
            nonlocal status, streaming
            if message["type"] == "http.response.start":
                status = int(message["status"])
                content_type = dict(message.get("headers", ())).get(b"content-type", b"")
                if status == 200 and content_type.startswith(_EVENT_STREAM):
                    streaming = True
                    self.metrics.active_streams.inc()
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            if streaming:
                self.metrics.active_streams.dec()
            seconds = time.perf_counter() - start
            self._record(scope, status, seconds)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        path = scope["path"]
        route = route_template(scope)
        method = scope["method"]
        if path != METRICS_PATH:
            self.metrics.observe(route, method, status, seconds)
        level = logging.DEBUG if path in QUIET_PATHS else logging.INFO
        if not log.isEnabledFor(level):
            return
        duration_ms = round(seconds * 1000, 1)
        log.log(
            level,
            "%s %s %d %.1fms",
            method,
            route,
            status,
            duration_ms,
            extra={"method": method, "route": route, "status": status, "duration_ms": duration_ms},
        )
