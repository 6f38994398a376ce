"""The REST/SSE endpoints: each parses, calls one RPC, and maps the result."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import grpc
from agent.v1 import agent_pb2 as pb
from agent.v1 import agent_pb2_grpc
from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway import convert, models
from gateway.errors import GatewayError, from_rpc_error
from gateway.sse import ChatEventStream

router = APIRouter()

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": models.ErrorBody} for code in (400, 401, 403, 404, 422, 429, 499, 503, 504)
}
_STATUS_TIMEOUT_S = 10.0


class Upstream:
    """What the routes need from the app: the stub and the call limits."""

    def __init__(self, channel: grpc.aio.Channel, request_timeout_s: float, keepalive_s: float):
        self.stub = agent_pb2_grpc.AgentServiceStub(channel)  # type: ignore[no-untyped-call]
        self.health = health_pb2_grpc.HealthStub(channel)
        # The service enforces request_timeout itself; this only bounds a lost service.
        self.chat_timeout_s = request_timeout_s + 10.0
        self.keepalive_s = keepalive_s


def _upstream(request: Request) -> Upstream:
    upstream: Upstream = request.app.state.upstream
    return upstream


UpstreamDep = Annotated[Upstream, Depends(_upstream)]


def _metadata(request: Request) -> tuple[tuple[str, str], ...]:
    auth = request.headers.get("authorization")
    return (("authorization", auth),) if auth else ()


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return JSONResponse(body, status_code=status)


_POLICIES = {
    None: pb.DISCONNECT_POLICY_UNSPECIFIED,
    "cancel": pb.DISCONNECT_POLICY_CANCEL,
    "continue": pb.DISCONNECT_POLICY_CONTINUE,
}


def _chat_fields(body: models.ChatRequest) -> dict[str, Any]:
    return {
        "message": body.message,
        "conversation_id": body.conversation_id or "",
        "user_id": body.user_id or "",
        "priority": body.priority,
        "new_conversation": body.new_conversation,
        "provider": body.provider or "",
        "model": body.model or "",
        "request_id": body.request_id or "",
        "on_disconnect": _POLICIES[body.on_disconnect],
    }


async def _cancel_on_disconnect(request: Request, call: grpc.aio.Call) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            call.cancel()
            return


@router.get("/health", tags=["status"])
async def health(upstream: UpstreamDep) -> Response:
    """Liveness of the gateway and health of the agent service (no auth)."""
    try:
        reply = await upstream.health.Check(health_pb2.HealthCheckRequest(), timeout=2.0)
    except grpc.aio.AioRpcError as exc:
        body = {"status": "unavailable", "service": "unreachable", "detail": exc.details()}
        return _json(body, 503)
    serving = reply.status == health_pb2.HealthCheckResponse.SERVING
    service = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status).lower()
    body = {"status": "ok" if serving else "unavailable", "service": service}
    return _json(body, 200 if serving else 503)


@router.post("/api/chat", tags=["chat"], response_model=models.ChatResponse, responses=_ERRORS)
async def chat(body: models.ChatRequest, request: Request, upstream: UpstreamDep) -> Response:
    """Run one chat turn and return the complete answer."""
    call = upstream.stub.Chat(
        pb.ChatRequest(**_chat_fields(body)),
        metadata=_metadata(request),
        timeout=upstream.chat_timeout_s,
    )
    watcher = asyncio.create_task(_cancel_on_disconnect(request, call))
    try:
        reply = await call
    except asyncio.CancelledError:
        if not watcher.done():
            raise
        return Response(status_code=499)  # the client went away; nobody reads this
    finally:
        watcher.cancel()
    return _json(convert.chat_response(reply))


@router.post("/api/chat/stream", tags=["chat"], responses=_ERRORS)
async def chat_stream(body: models.ChatRequest, request: Request, upstream: UpstreamDep) -> Any:
    """Run one chat turn and stream it as Server-Sent Events.

    Events: `queued` (request_id, position, estimated_wait_s; again when the
    position changes), `start`, `message` ({"text": delta}), `tool_call`,
    `tool_result`, then exactly one `done` (the /api/chat answer) or `error`
    (code, message). Comment lines keep idle connections alive.
    """
    call = upstream.stub.ChatStream(
        pb.ChatStreamRequest(**_chat_fields(body)),
        metadata=_metadata(request),
        timeout=upstream.chat_timeout_s,
    )
    return ChatEventStream(call, upstream.keepalive_s)


def _after(last_event_id: str | None, after: int | None) -> int | GatewayError:
    """The seq to replay after: the Last-Event-ID header, else ?after=, else 0 (everything)."""
    if last_event_id is None or not last_event_id.strip():
        return after or 0
    value = last_event_id.strip()
    if not value.isdigit() or len(value) > 18:
        return GatewayError(
            400,
            "invalid_argument",
            f"Last-Event-ID must be an event id this stream sent (a number), not {value[:40]!r}",
        )
    return int(value)


@router.get("/api/requests/{request_id}/events", tags=["chat"], responses=_ERRORS)
async def watch_request(
    request_id: Annotated[str, Path(min_length=1, max_length=64)],
    request: Request,
    upstream: UpstreamDep,
    user_id: Annotated[str | None, Query()] = None,
    after: Annotated[int | None, Query(ge=0, description="Replay events after this id")] = None,
    last_event_id: Annotated[
        str | None, Header(description="The id of the last event seen; wins over ?after=")
    ] = None,
) -> Any:
    """Re-attach to a request's events as Server-Sent Events (owner only; others get 404).

    Replays the events after `Last-Event-ID` (or `?after=`), then follows the
    request live; the stream ends with exactly one `done` or `error`. After the
    request ended and its buffer expired, the one event is `done` with the
    stored answer, or `error` with how it ended.
    """
    after_seq = _after(last_event_id, after)
    if isinstance(after_seq, GatewayError):
        return error_response(after_seq)
    call = upstream.stub.WatchRequest(
        pb.WatchRequestRequest(request_id=request_id, after_seq=after_seq, user_id=user_id or ""),
        metadata=_metadata(request),
        timeout=upstream.chat_timeout_s,
    )
    return ChatEventStream(call, upstream.keepalive_s, watch=True)


@router.get("/api/status", tags=["status"], responses=_ERRORS)
async def status(
    request: Request, upstream: UpstreamDep, user_id: Annotated[str | None, Query()] = None
) -> Response:
    """Provider, model, reachability, queue statistics, active users, version."""
    reply = await upstream.stub.GetStatus(
        pb.GetStatusRequest(user_id=user_id or ""),
        metadata=_metadata(request),
        timeout=_STATUS_TIMEOUT_S,
    )
    return _json(convert.status(reply))


@router.post(
    "/api/queue/status",
    tags=["queue"],
    response_model=models.QueueStatusResponse,
    responses=_ERRORS,
)
async def queue_status(
    body: models.RequestRef, request: Request, upstream: UpstreamDep
) -> Response:
    """A request's state and its position in the queue (owner only)."""
    reply = await upstream.stub.GetQueueStatus(
        pb.GetQueueStatusRequest(request_id=body.request_id, user_id=body.user_id or ""),
        metadata=_metadata(request),
        timeout=_STATUS_TIMEOUT_S,
    )
    return _json(convert.queue_status(reply))


@router.post(
    "/api/queue/cancel", tags=["queue"], response_model=models.CancelResponse, responses=_ERRORS
)
async def queue_cancel(
    body: models.RequestRef, request: Request, upstream: UpstreamDep
) -> Response:
    """Cancel a queued or running request (owner only)."""
    reply = await upstream.stub.CancelRequest(
        pb.CancelRequestRequest(request_id=body.request_id, user_id=body.user_id or ""),
        metadata=_metadata(request),
        timeout=_STATUS_TIMEOUT_S,
    )
    return _json(convert.cancel(reply))


@router.get(
    "/api/conversations",
    tags=["conversations"],
    response_model=models.ConversationListResponse,
    responses=_ERRORS,
)
async def list_conversations(
    request: Request,
    upstream: UpstreamDep,
    user_id: Annotated[str | None, Query()] = None,
    page_size: Annotated[int, Query(ge=1, le=100)] = 20,
    page_token: Annotated[str, Query(max_length=512)] = "",
) -> Response:
    """The caller's conversations, most recently active first."""
    reply = await upstream.stub.ListConversations(
        pb.ListConversationsRequest(
            user_id=user_id or "", page_size=page_size, page_token=page_token
        ),
        metadata=_metadata(request),
        timeout=_STATUS_TIMEOUT_S,
    )
    return _json(
        {
            "conversations": [convert.summary(c) for c in reply.conversations],
            "next_page_token": reply.next_page_token,
        }
    )


@router.get("/api/conversations/{conversation_id}", tags=["conversations"], responses=_ERRORS)
async def get_conversation(
    conversation_id: str,
    request: Request,
    upstream: UpstreamDep,
    user_id: Annotated[str | None, Query()] = None,
) -> Response:
    """One of the caller's conversations with all its messages."""
    reply = await upstream.stub.GetConversation(
        pb.GetConversationRequest(conversation_id=conversation_id, user_id=user_id or ""),
        metadata=_metadata(request),
        timeout=_STATUS_TIMEOUT_S,
    )
    return _json(convert.conversation(reply))


@router.delete("/api/conversations/{conversation_id}", tags=["conversations"], responses=_ERRORS)
async def delete_conversation(
    conversation_id: str,
    request: Request,
    upstream: UpstreamDep,
    user_id: Annotated[str | None, Query()] = None,
) -> Response:
    """Delete one of the caller's conversations."""
    reply = await upstream.stub.DeleteConversation(
        pb.DeleteConversationRequest(conversation_id=conversation_id, user_id=user_id or ""),
        metadata=_metadata(request),
        timeout=_STATUS_TIMEOUT_S,
    )
    return _json({"conversation_id": reply.conversation_id, "deleted": reply.deleted})


def error_response(error: GatewayError) -> Response:
    """The JSON error body with its status and Retry-After."""
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers())


def rpc_error_response(exc: grpc.aio.AioRpcError) -> Response:
    return error_response(from_rpc_error(exc))
