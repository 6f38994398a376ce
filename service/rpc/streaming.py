"""The streaming RPCs' bodies: ChatStream, Chat and WatchRequest over ``StreamingTurns``.

Kept apart from the servicer so the disconnect policy, re-attach and retry
handling sit in one place; the servicer only authenticates and delegates.
"""

from __future__ import annotations

import grpc
from agent.v1 import agent_pb2 as pb

from service.errors import InvalidRequest
from service.events import ChatEvent, TurnInput, TurnResult
from service.rpc import convert
from service.rpc.errors import Context, abort
from service.rpc.forward import ReplicaForwarder, was_forwarded
from service.streams import Policy, RunElsewhere, StreamingTurns

_POLICIES: dict[int, Policy] = {
    pb.DISCONNECT_POLICY_CANCEL: "cancel",
    pb.DISCONNECT_POLICY_CONTINUE: "continue",
}
# Sent once a watched request is found, so a relay can tell NOT_FOUND from an outcome;
# repeated in the trailing metadata of a watch that then ends in error, because a client
# that reads the initial metadata only after the call ended gets none from grpc.
WATCH_ATTACHED = (("agent-watch", "attached"),)


def policy(request: pb.ChatRequest | pb.ChatStreamRequest) -> Policy | None:
    """The request's disconnect policy; None: the configured one."""
    return _POLICIES.get(request.on_disconnect)


async def chat_stream(
    streams: StreamingTurns, turn: TurnInput, chosen: Policy | None, context: Context
) -> None:
    """One turn (or a retry of one) streamed; a failure ends the stream with its status."""

    async def write(seq: int, event: ChatEvent) -> None:
        await context.write(convert.stream_event(event, seq))

    try:
        await streams.stream(turn, chosen, write)
    except grpc.aio.AbortError:
        raise
    except Exception as exc:  # every failure must become a status
        await abort(context, exc)


async def chat(streams: StreamingTurns, turn: TurnInput, chosen: Policy | None) -> TurnResult:
    """One turn (or a retry of one), full answer."""
    return await streams.answer(turn, chosen)


async def watch(
    streams: StreamingTurns,
    request: pb.WatchRequestRequest,
    user_id: str,
    context: Context,
    forwarder: ReplicaForwarder | None = None,
) -> None:
    """Re-attach to a request: its events after ``after_seq``, then live, then its end.

    A request another replica runs is watched there, through ``forwarder``.
    """

    attached: tuple[tuple[str, str], ...] = ()

    async def found() -> None:
        nonlocal attached
        await context.send_initial_metadata(WATCH_ATTACHED)
        attached = WATCH_ATTACHED

    async def write(seq: int, event: ChatEvent) -> None:
        await context.write(pb.WatchRequestResponse(event=convert.stream_event(event, seq)))

    try:
        if not request.request_id:
            raise InvalidRequest("request_id is required")
        if request.after_seq < 0:
            raise InvalidRequest("after_seq must not be negative")
        await streams.watch(user_id, request.request_id, request.after_seq, found, write)
    except RunElsewhere as moved:
        if forwarder is None or was_forwarded(context):
            await abort(context, moved)
        relayed = pb.WatchRequestRequest(
            request_id=request.request_id, after_seq=request.after_seq, user_id=user_id
        )
        await forwarder.watch(moved.address, relayed, context)
    except grpc.aio.AbortError:
        raise
    except Exception as exc:
        await abort(context, exc, attached)
