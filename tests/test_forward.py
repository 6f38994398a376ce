"""A watch forwarded to the replica that runs the request relays its end, status and details."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from agent.v1 import agent_pb2 as pb
from agent.v1 import agent_pb2_grpc

from service.rpc.forward import FORWARDED, ReplicaForwarder

DETAILS = (("agent-reason-bin", b"\x00moved"), ("agent-note", "the owner says so"))


class Owner(agent_pb2_grpc.AgentServiceServicer):
    """The replica that runs the request: one event, then it ends with an error and details."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    async def WatchRequest(
        self, request: pb.WatchRequestRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.WatchRequestResponse]:
        self.seen = list(context.invocation_metadata() or ())
        yield pb.WatchRequestResponse()
        await context.abort(grpc.StatusCode.UNAVAILABLE, "moving", trailing_metadata=DETAILS)


class Relay(agent_pb2_grpc.AgentServiceServicer):
    def __init__(self, forwarder: ReplicaForwarder, owner: str) -> None:
        self._forwarder, self._owner = forwarder, owner

    async def WatchRequest(
        self, request: pb.WatchRequestRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        await self._forwarder.watch(self._owner, request, context)


async def _serve(servicer: agent_pb2_grpc.AgentServiceServicer) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    agent_pb2_grpc.add_AgentServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def test_the_owners_error_and_its_trailing_details_reach_the_caller() -> None:
    # Seen in a rolling restart: the relay's abort got grpc.aio.Metadata and raised
    # TypeError, so the client's stream ended "unknown" (500) instead of re-attaching.
    owner = Owner()
    owner_server, owner_address = await _serve(owner)
    forwarder = ReplicaForwarder()
    relay_server, relay_address = await _serve(Relay(forwarder, owner_address))
    try:
        async with grpc.aio.insecure_channel(relay_address) as channel:
            stub = agent_pb2_grpc.AgentServiceStub(channel)  # type: ignore[no-untyped-call]
            call = stub.WatchRequest(
                pb.WatchRequestRequest(request_id="r1"), metadata=[("x-request-id", "r1")]
            )
            got = []
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                async for response in call:
                    got.append(response)
        assert len(got) == 1
        assert ended.value.code() is grpc.StatusCode.UNAVAILABLE
        assert ended.value.details() == "moving"
        trailing = dict(ended.value.trailing_metadata() or ())
        assert trailing["agent-reason-bin"] == b"\x00moved"
        assert trailing["agent-note"] == "the owner says so"
        assert (FORWARDED, "1") in owner.seen and ("x-request-id", "r1") in owner.seen
    finally:
        await forwarder.close()
        await relay_server.stop(None)
        await owner_server.stop(None)
