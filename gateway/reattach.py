"""A stream cut by its replica (a deploy, a crash) is picked up again through another one.

With several service replicas the gateway balances calls over them; when the
replica relaying a stream goes away, the gRPC call ends UNAVAILABLE without
any status of the service's own (no ``grpc-status-details-bin``: the
connection died, the request did not fail). The request itself is in the
shared queue, so the gateway re-attaches to it (``WatchRequest``, after the
last event this client got) through whichever replica the balancer picks:
that replica follows it, forwards to the replica running it, or takes over a
waiting request the gone one held. The client's SSE stream goes on; it never
sees the cut. An outcome the service did report (an error with its details)
is passed on as it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from agent.v1 import agent_pb2 as pb

from gateway.errors import from_rpc_error

_DETAILS = "grpc-status-details-bin"
MOVED = "REQUEST_MOVED"  # service/errors.py Reason.REQUEST_MOVED
_ATTACHED = ("agent-watch", "attached")

Reattach = Callable[[int], Awaitable[Any]]


def is_cut(exc: grpc.aio.AioRpcError) -> bool:
    """The request lives on but not on that replica: its connection died (no status of
    the service's own), or the service said it moved (reason REQUEST_MOVED, a drain
    handed it over). Anything else the service reported is the request's outcome."""
    if exc.code() is not grpc.StatusCode.UNAVAILABLE:
        return False
    trailing = exc.trailing_metadata() or ()
    if not any(key == _DETAILS for key, _ in trailing):
        return True
    return from_rpc_error(exc).reason == MOVED


def reattacher(
    stub: Any,
    request_id: str,
    user_id: str,
    metadata: tuple[tuple[str, str], ...],
    *,
    give_up_after_s: float,
    timeout_s: float,
) -> Reattach:
    """A function that re-attaches to ``request_id`` after a seq, retrying while it moves."""

    async def attach(after: int) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + give_up_after_s
        pause = 0.2
        while True:
            call = stub.WatchRequest(
                pb.WatchRequestRequest(request_id=request_id, after_seq=after, user_id=user_id),
                metadata=metadata,
                timeout=timeout_s,
            )
            try:
                initial = await call.initial_metadata()
                if initial is not None and _ATTACHED in tuple(initial):
                    return call
                await call.read()  # not attached: its status says why
            except grpc.aio.AioRpcError as exc:
                if _ATTACHED in tuple(exc.trailing_metadata() or ()):
                    # Found, and already ended (grpc dropped the initial metadata of a call
                    # that ended before they were read): its status is the outcome.
                    return call
                # UNAVAILABLE: no replica up yet, or the request is being taken over.
                if exc.code() is not grpc.StatusCode.UNAVAILABLE or loop.time() >= deadline:
                    return None
            call.cancel()
            await asyncio.sleep(pause)  # a back-off between attempts, not a synchronisation
            pause = min(pause * 2, 1.0)

    return attach
