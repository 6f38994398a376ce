"""Optional OpenTelemetry tracing: a server span per HTTP request, context passed on over gRPC.

Off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (or a tracer provider is
given to ``create_app``); opentelemetry is imported only then, so it stays an
optional extra (``pip install agent-service[otel]``). The span is named
``METHOD /route/{template}`` once the router has matched; the calls a route
makes carry the W3C ``traceparent`` in their gRPC metadata, so the service
continues the same trace.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.access_log import route_template

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
SERVICE_NAME = "agent-gateway"

Inject = Callable[[dict[str, str]], None]


def provider_from_environment() -> TracerProvider | None:
    """An OTLP-exporting tracer provider when the endpoint variable is set, else None."""
    if not os.environ.get(ENDPOINT_ENV):
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # OTEL_SERVICE_NAME, when set, overrides the default name (the SDK reads it).
    provider = SdkTracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def injector() -> Inject:
    """Writes the current trace context (``traceparent``, ``tracestate``) into a carrier."""
    from opentelemetry.propagate import inject

    def _inject(carrier: dict[str, str]) -> None:
        inject(carrier)

    return _inject


def shutdown(provider: TracerProvider) -> None:
    """Flush what is buffered (the SDK provider has shutdown(); the API one does not)."""
    close: Any = getattr(provider, "shutdown", None)
    if callable(close):
        close()


class TracingMiddleware:
    """Pure ASGI: one SERVER span around each HTTP request, current while the app runs."""

    def __init__(self, app: ASGIApp, provider: TracerProvider) -> None:
        from opentelemetry import trace

        self.app = app
        self._trace = trace
        self._tracer = provider.get_tracer("gateway")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        status = 500
        with self._tracer.start_as_current_span(
            method,
            kind=self._trace.SpanKind.SERVER,
            attributes={"http.request.method": method},
        ) as span:

            async def observe(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                await send(message)

            try:
                await self.app(scope, receive, observe)
            finally:
                route = route_template(scope)
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(self._trace.StatusCode.ERROR)
