"""Tracing: a server span per request, named by route template; traceparent goes over gRPC."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator

import grpc
import pytest
from agent.v1 import agent_pb2 as pb
from agent.v1 import agent_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.gateway.obs_helpers import gateway


class RecordingService(agent_pb2_grpc.AgentServiceServicer):
    """A fake AgentService: answers GetStatus and keeps the metadata of every call."""

    def __init__(self) -> None:
        self.metadata: list[dict[str, str]] = []

    async def GetStatus(
        self, request: pb.GetStatusRequest, context: object
    ) -> pb.GetStatusResponse:
        self.metadata.append(dict(context.invocation_metadata()))  # type: ignore[attr-defined]
        # identity_source as the service always sets it (the document lists its values).
        return pb.GetStatusResponse(
            status="ok", provider="ollama", model="m", identity_source="open"
        )


@pytest.fixture
async def recording() -> AsyncIterator[tuple[RecordingService, int]]:
    server = grpc.aio.server()
    service = RecordingService()
    agent_pb2_grpc.add_AgentServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield service, port
    await server.stop(None)


async def test_a_request_gets_a_span_and_its_call_the_traceparent(
    recording: tuple[RecordingService, int],
) -> None:
    service, port = recording
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with gateway(port, tracer_provider=provider) as (_, client):
        reply = await client.get("/api/status", headers={"X-Request-ID": "trace-1"})
    assert reply.status_code == 200, reply.text
    (span,) = exporter.get_finished_spans()
    assert span.name == "GET /api/status"
    assert span.kind is SpanKind.SERVER
    assert span.attributes is not None
    assert span.attributes["http.route"] == "/api/status"
    assert span.attributes["http.response.status_code"] == 200
    (metadata,) = service.metadata
    assert metadata["x-request-id"] == "trace-1"
    version, trace_id, span_id, _flags = metadata["traceparent"].split("-")
    assert version == "00"
    assert int(trace_id, 16) == span.context.trace_id
    assert int(span_id, 16) == span.context.span_id


async def test_no_provider_no_traceparent(
    recording: tuple[RecordingService, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    service, port = recording
    async with gateway(port) as (_, client):
        assert (await client.get("/api/status")).status_code == 200
    (metadata,) = service.metadata
    assert "traceparent" not in metadata
    assert "x-request-id" in metadata


def test_the_otel_extra_is_not_imported_when_tracing_is_off() -> None:
    # opentelemetry-api itself comes with FastAPI; the SDK and the exporter are the extra.
    code = (
        "import sys\n"
        "from gateway.app import create_app\n"
        "create_app()\n"
        "loaded = sorted(m for m in sys.modules\n"
        "                if m.startswith(('opentelemetry.sdk', 'opentelemetry.exporter')))\n"
        "assert not loaded, loaded\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OTEL_EXPORTER_OTLP_ENDPOINT"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
