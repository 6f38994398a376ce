"""Re-attaching through any replica: a watch of a request another replica runs is forwarded.

With several replicas behind one balanced gateway a client re-attaches
through whichever replica the balancer picks, but a request's events live in
the replica that runs it. That replica's address is in the shared queue;
this one relays the owner's ``WatchRequest`` stream call for call, with the
caller's own credentials, so the owner authenticates it exactly as if the
client had called it. A forwarded call is marked so it is never forwarded
twice (the owner answers it or says it cannot).
"""

from __future__ import annotations

import grpc
from agent.v1 import agent_pb2 as pb
from agent.v1 import agent_pb2_grpc

from service.rpc.errors import Context

FORWARDED = "agent-forwarded"
_PASSED = ("authorization", "x-request-id", "traceparent")


def was_forwarded(context: Context) -> bool:
    return any(key == FORWARDED for key, _ in context.invocation_metadata() or ())


class ReplicaForwarder:
    """One channel per peer replica, opened on first use and closed at shutdown."""

    def __init__(self) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _stub(self, address: str) -> agent_pb2_grpc.AgentServiceStub:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = grpc.aio.insecure_channel(address)
        return agent_pb2_grpc.AgentServiceStub(channel)  # type: ignore[no-untyped-call]

    async def watch(self, address: str, request: pb.WatchRequestRequest, context: Context) -> None:
        """Relay the owner's WatchRequest stream to this call, its status included."""
        passed = [(k, v) for k, v in context.invocation_metadata() or () if k in _PASSED]
        call = self._stub(address).WatchRequest(request, metadata=[*passed, (FORWARDED, "1")])
        try:
            initial = await call.initial_metadata()
            if initial:
                await context.send_initial_metadata(tuple(initial))
            async for response in call:
                await context.write(response)
        except grpc.aio.AioRpcError as exc:
            # The server's abort takes a tuple, not the client's Metadata (a TypeError that
            # ended the call UNKNOWN whenever the owner's status had details).
            trailing = tuple(exc.trailing_metadata() or ())
            await context.abort(exc.code(), exc.details() or "", trailing_metadata=trailing)
        finally:
            call.cancel()

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close(grace=None)
