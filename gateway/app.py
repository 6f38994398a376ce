"""The FastAPI app factory; the gRPC channel lives in the lifespan."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import grpc
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response
from starlette.types import ASGIApp

from gateway import health, tracing
from gateway.access_log import METRICS_PATH, AccessMiddleware
from gateway.body_limit import BodySizeLimit
from gateway.config import GatewaySettings, load_gateway_settings
from gateway.docs import install_docs
from gateway.drain import Drain, DrainMiddleware, install_sigterm
from gateway.http_errors import install_error_handlers
from gateway.metrics import GatewayMetrics
from gateway.openapi import install_openapi
from gateway.request_id import RequestIdMiddleware
from gateway.routes import Upstream, router, rpc_error_response
from gateway.upstream_target import balancing_options, dial_target

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

# A request message is never larger than the JSON body it came from (field names
# become tags, escapes become bytes), so the body limit plus room for the gRPC
# envelope bounds what the gateway sends; the service's receive limit is the same.
GRPC_MESSAGE_SLACK = 64 * 1024
# Replies (a whole conversation) are not bounded by a request body.
GRPC_MAX_REPLY_BYTES = 32 * 1024 * 1024


def grpc_request_limit(max_body_bytes: int) -> int:
    """The largest request message the gateway sends and the service accepts."""
    return max_body_bytes + GRPC_MESSAGE_SLACK


def channel_options(settings: GatewaySettings) -> list[tuple[str, Any]]:
    return [
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.max_send_message_length", grpc_request_limit(settings.api_server.max_body_bytes)),
        ("grpc.max_receive_message_length", GRPC_MAX_REPLY_BYTES),
    ]


class GatewayApp(FastAPI):
    """FastAPI with the observing middleware outside Starlette's error middleware.

    So a 500 from an unhandled exception is counted, logged and carries its
    X-Request-ID like every other answer. Order, outermost first: request id,
    trace span, access line and metrics.
    """

    observers: list[tuple[type[Any], dict[str, Any]]]

    def build_middleware_stack(self) -> ASGIApp:
        app = super().build_middleware_stack()
        for cls, options in reversed(self.observers):
            app = cls(app, **options)
        return app


def create_app(
    settings: GatewaySettings | None = None,
    *,
    tracer_provider: TracerProvider | None = None,
    handle_signals: bool = False,
    freeze_heap: bool = False,
) -> FastAPI:
    """A gateway app; one long-lived gRPC channel per process.

    ``tracer_provider`` turns tracing on (else only OTEL_EXPORTER_OTLP_ENDPOINT
    does); ``handle_signals`` makes SIGTERM drain the app, and ``freeze_heap``
    leaves what start-up built out of the garbage collector's full collections
    (both for uvicorn workers, which are processes of their own).
    """
    settings = settings or GatewaySettings()
    own_provider = tracer_provider is None
    provider = tracer_provider or tracing.provider_from_environment()
    metrics = GatewayMetrics.from_environment()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        target, balanced = dial_target(settings.grpc.address)
        channel = grpc.aio.insecure_channel(
            target, options=[*channel_options(settings), *balancing_options(balanced)]
        )
        app.state.upstream = Upstream(
            channel,
            settings.api_server.request_timeout,
            settings.sse.keepalive_s,
            inject=tracing.injector() if provider is not None else None,
            stop=drain,
        )
        undo = install_sigterm(drain) if handle_signals else None
        if freeze_heap:
            # Requests in flight survive young collections, so a worker under load ran a
            # full collection every few seconds; each walked the ~100,000 objects of
            # start-up (40-80 ms) and found nothing to free. Frozen, they are not walked.
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            if undo is not None:
                undo()
            await channel.close(grace=None)
            metrics.close()
            if provider is not None and own_provider:
                tracing.shutdown(provider)

    app = GatewayApp(
        title="Multi-User AI Agent API",
        description=(
            "REST and Server-Sent-Events gateway of the agent service. "
            "Send `Authorization: Bearer <token>`. Errors are "
            '`{"detail": "...", "code": "..."}`; `code` is the gRPC code in lower case, '
            "or `payload_too_large`, `not_found`, `method_not_allowed` for errors of the "
            "HTTP layer."
        ),
        version="0.1.0",
        lifespan=lifespan,
        # FastAPI's own OpenTelemetry spans and metrics would switch on with any global
        # provider and double gateway.tracing's spans: the gateway traces only its own way.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
        docs_url=None,  # served by gateway.docs from local assets
        redoc_url=None,
    )
    drain = Drain(settings.api_server.shutdown_grace_s)
    app.state.drain = drain
    app.state.metrics = metrics
    app.state.readiness = health.Readiness()
    app.observers = [(RequestIdMiddleware, {})]
    if provider is not None:
        app.observers.append((tracing.TracingMiddleware, {"provider": provider}))
    app.observers.append((AccessMiddleware, {"metrics": metrics}))
    # Inside CORS (added later = outer), so a browser can read the 413 too.
    app.add_middleware(BodySizeLimit, max_bytes=settings.api_server.max_body_bytes)
    if settings.api_server.enable_cors:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.api_server.cors_origins,
            allow_credentials="*" not in settings.api_server.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            # Browser code reads the request id, and when to retry a 429 or 503.
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    app.add_middleware(DrainMiddleware, drain=drain)
    app.include_router(router)
    app.include_router(health.router)

    @app.get(METRICS_PATH, include_in_schema=False)
    async def prometheus_metrics() -> Response:
        # No auth: keep it off the public listener (see docs/operations.md).
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    install_error_handlers(app)
    install_docs(app)
    install_openapi(app)

    @app.exception_handler(grpc.aio.AioRpcError)
    async def _rpc_error(request: Request, exc: grpc.aio.AioRpcError) -> Response:
        return rpc_error_response(exc)

    return app


def app_from_environment() -> FastAPI:
    """Factory for uvicorn workers: settings from AGENT_CONFIG and the environment."""
    return create_app(load_gateway_settings(), handle_signals=True, freeze_heap=True)
