"""Optional OpenTelemetry spans: the RPC (continuing the caller's W3C traceparent),
the wait for a queue slot, and each model call.

Off unless a tracer provider is given, or ``OTEL_EXPORTER_OTLP_ENDPOINT`` is
set and the ``otel`` extra is installed (``pip install agent-service[otel]``);
when off, nothing of OpenTelemetry is imported and every span is a no-op.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any

log = logging.getLogger(__name__)

_SCOPE = "agent-service"


class Tracing:
    """Makes the service's spans with one tracer provider (None: no spans)."""

    def __init__(self, provider: Any | None = None) -> None:
        self._tracer: Any | None = None
        if provider is not None:
            self._tracer = provider.get_tracer(_SCOPE)

    @contextlib.contextmanager
    def rpc(self, method: str, metadata: Mapping[str, str]) -> Iterator[None]:
        """A server span for one RPC, a child of the caller's span when it sent traceparent."""
        if self._tracer is None:
            yield
            return
        from opentelemetry.propagate import extract
        from opentelemetry.trace import SpanKind

        parent = extract(dict(metadata))
        with self._tracer.start_as_current_span(
            method, context=parent, kind=SpanKind.SERVER, attributes={"rpc.method": method}
        ):
            yield

    @contextlib.contextmanager
    def span(self, name: str, **attributes: str | int) -> Iterator[None]:
        """A child span of whatever span is current (the RPC's, for a turn's work)."""
        if self._tracer is None:
            yield
            return
        with self._tracer.start_as_current_span(name, attributes=attributes):
            yield


def tracing_from_environment() -> Tracing:
    """Tracing with an OTLP exporter when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set."""
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return Tracing()
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed; "
            "install the extra (pip install 'agent-service[otel]') to export traces"
        )
        return Tracing()
    provider = TracerProvider(resource=Resource.create({"service.name": "agent-service"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return Tracing(provider)
