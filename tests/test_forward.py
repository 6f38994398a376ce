"""A watch forwarded to the replica running the request relays its events and its status."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from agent.v1 import agent_pb2 as pb
from agent.v1 import agent_pb2_grpc

from gateway.errors import from_rpc_error
from service.errors import Reason, ServiceUnavailable
from service.rpc.errors import Context, abort
from service.rpc.forward import ReplicaForwarder


class Owner(agent_pb2_grpc.AgentServiceServicer):
    """The replica running the request: it is draining and hands it over."""

    async def WatchRequest(self, request: pb.WatchRequestRequest, context: Context) -> None:
        moved = ServiceUnavailable(
            f"request {request.request_id} was handed over to another service replica",
            retry_after_s=1.0,
            reason=Reason.REQUEST_MOVED,
        )
        await abort(context, moved)


class Relay(agent_pb2_grpc.AgentServiceServicer):
    """The replica the watch reached: it forwards to the owner."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.forwarder = ReplicaForwarder()

    async def WatchRequest(self, request: pb.WatchRequestRequest, context: Context) -> None:
        await self.forwarder.watch(self.owner, request, context)


async def serving(servicer: agent_pb2_grpc.AgentServiceServicer) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    agent_pb2_grpc.add_AgentServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture
async def relay() -> AsyncIterator[str]:
    owner_server, owner = await serving(Owner())
    relaying = Relay(owner)
    relay_server, address = await serving(relaying)
    yield address
    await relaying.forwarder.close()
    await relay_server.stop(None)
    await owner_server.stop(None)


async def test_the_owners_error_is_relayed_with_its_details(relay: str) -> None:
    async with grpc.aio.insecure_channel(relay) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)  # type: ignore[no-untyped-call]
        call = stub.WatchRequest(pb.WatchRequestRequest(request_id="r1", user_id="u1"))
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await call.read()
    assert ended.value.code() is grpc.StatusCode.UNAVAILABLE  # not UNKNOWN
    assert "handed over" in (ended.value.details() or "")
    assert from_rpc_error(ended.value).reason == "REQUEST_MOVED"  # the details came along
