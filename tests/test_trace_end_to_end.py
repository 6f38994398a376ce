"""One chat, one trace: the gateway's route span, the service's RPC span, the queue
wait and the model call, all in one trace (the SDK's in-memory exporter).

The gateway app and the service run in this process on real sockets (gRPC
between them, HTTP to the fake Ollama), each with the same tracer provider,
so every span either creates lands in the one exporter.
"""

from __future__ import annotations

from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from service.config import Settings
from service.observability.tracing import Tracing
from service.server import running_service
from tests.fakes.ollama import FakeOllama
from tests.gateway.conftest import TOKEN
from tests.gateway.obs_helpers import gateway


async def test_one_chat_is_one_trace_from_the_route_to_the_model_call(
    tmp_path: Path, fake: FakeOllama
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = Settings(
        grpc={"address": "127.0.0.1:0"},
        metrics={"address": ""},
        store={"url": f"sqlite:///{tmp_path / 'agent.db'}"},
        auth={"shared_token": TOKEN},
        api={"provider": "ollama"},
        ollama={"url": fake.url},
    )
    async with (
        running_service(settings, tracing=Tracing(provider)) as service,
        gateway(service.port, tracer_provider=provider) as (_, client),
    ):
        reply = await client.post("/api/chat", json={"message": "hello", "user_id": "tracer"})
    assert reply.status_code == 200, reply.text

    spans = {span.name: span for span in exporter.get_finished_spans()}
    route = spans["POST /api/chat"]
    rpc = spans["/agent.v1.AgentService/Chat"]
    call = spans["provider call"]
    assert route.kind is SpanKind.SERVER and rpc.kind is SpanKind.SERVER
    # One trace, parented gateway route -> RPC -> model call.
    assert {s.context.trace_id for s in (route, rpc, call)} == {route.context.trace_id}
    assert rpc.parent is not None and rpc.parent.span_id == route.context.span_id
    assert call.parent is not None and call.parent.span_id == rpc.context.span_id
    assert call.attributes is not None and call.attributes["provider"] == "ollama"
