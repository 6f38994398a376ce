"""What operators see with grpcurl: reflection, the health service, status codes."""

from __future__ import annotations

import grpc
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from tests.e2e.stack import Stack


def test_reflection_lists_the_service_and_calls_get_status(ollama_stack: Stack) -> None:
    """A client with no generated stubs, as grpcurl is."""
    with grpc.insecure_channel(ollama_stack.grpc_address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = database.get_services()
        assert "agent.v1.AgentService" in services
        assert "grpc.health.v1.Health" in services
        pool = descriptor_pool.DescriptorPool(database)
        service = pool.FindServiceByName("agent.v1.AgentService")
        method = service.FindMethodByName("GetStatus")
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        call = channel.unary_unary(
            "/agent.v1.AgentService/GetStatus",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_class.FromString,
        )
        reply = call(request_class(), timeout=10)
        assert reply.provider == "ollama"
        assert reply.model == "llama3.2"
        assert reply.queue_stats.max_pending > 0


def test_health_service_is_serving(ollama_stack: Stack) -> None:
    with grpc.insecure_channel(ollama_stack.grpc_address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in ("", "agent.v1.AgentService"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
