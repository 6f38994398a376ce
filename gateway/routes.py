"""The REST/SSE endpoints: each parses, calls one RPC, and maps the result."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Annotated, Any

import grpc
from agent.v1 import agent_pb2 as pb
from agent.v1 import agent_pb2_grpc
from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import BeforeValidator
from starlette.exceptions import HTTPException

from gateway import convert, models, request_id, status_models
from gateway import openapi as docs
from gateway.errors import GatewayError, from_rpc_error
from gateway.reattach import Reattach, reattacher
from gateway.sse import ChatEventStream, StreamStop

router = APIRouter()

_STATUS_TIMEOUT_S = 10.0
# The service refuses a bearer token past auth.jwt.max_token_bytes (8 KiB), and gRPC one
# past its metadata limit with RESOURCE_EXHAUSTED, which would read as a 429; a token that
# large is refused here, as the invalid token it is, without the hop.
_MAX_AUTHORIZATION_BYTES = 8192 + len("Bearer ")
# How long a stream cut by its replica keeps trying to re-attach through another: longer
# than a replica's lease (scheduler.lease_s, 10 s by default) plus a take-over.
REATTACH_S = 20.0
_WHOLE_NUMBER = re.compile(r"-?[0-9]{1,10}")


class Upstream:
    """What the routes need from the app: the stub, the call limits, what goes with each call."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        request_timeout_s: float,
        keepalive_s: float,
        *,
        inject: Callable[[dict[str, str]], None] | None = None,
        stop: StreamStop | None = None,
    ):
        self.stub = agent_pb2_grpc.AgentServiceStub(channel)  # type: ignore[no-untyped-call]
        self.health = health_pb2_grpc.HealthStub(channel)
        # The service enforces request_timeout itself; this only bounds a lost service.
        self.chat_timeout_s = request_timeout_s + 10.0
        self.keepalive_s = keepalive_s
        self.inject = inject  # the trace context into the metadata, when tracing is on
        self.stop = stop  # ends open streams when the gateway drains

    def reattacher(
        self, request_id: str, user_id: str, metadata: tuple[tuple[str, str], ...]
    ) -> Reattach | None:
        """How a stream of ``request_id`` cut by its replica is picked up again (None: no id)."""
        if not request_id:
            return None
        return reattacher(
            self.stub,
            request_id,
            user_id,
            metadata,
            give_up_after_s=REATTACH_S,
            timeout_s=self.chat_timeout_s,
        )


# async: FastAPI runs a plain-def dependency in a worker thread, a thread hop per request.
async def _upstream(request: Request) -> Upstream:
    upstream: Upstream = request.app.state.upstream
    return upstream


UpstreamDep = Annotated[Upstream, Depends(_upstream)]


def _metadata(request: Request) -> tuple[tuple[str, str], ...]:
    """The caller's token, the request id, and the trace context when tracing is on."""
    pairs: list[tuple[str, str]] = []
    auth = request.headers.get("authorization")
    if auth and len(auth) > _MAX_AUTHORIZATION_BYTES:
        raise HTTPException(
            401,
            f"invalid token: the Authorization header is {len(auth)} bytes long, "
            f"more than the {_MAX_AUTHORIZATION_BYTES} allowed",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    if auth:
        pairs.append(("authorization", auth))
    info = request_id.current()
    if info is not None:
        pairs.append((request_id.HEADER, info.request_id))
    upstream: Upstream = request.app.state.upstream
    if upstream.inject is not None:
        carrier: dict[str, str] = {}
        upstream.inject(carrier)
        pairs.extend(carrier.items())
    return tuple(pairs)


UserIdQuery = Annotated[
    str | None, Query(pattern=models.USER_ID_PATTERN, description="User to act as")
]


def _whole_number(value: object) -> object:
    """Refuse what lax int parsing would accept ("1.0", "1_000", "+5", " 7")."""
    if isinstance(value, str) and not _WHOLE_NUMBER.fullmatch(value):
        raise ValueError("must be a whole number written in digits")
    return value


# One rule for both paginated routes: digits only (422 otherwise); absent or 0 is
# the default; the range is the service's to check (400), so the bounds here only
# keep the value inside the proto's int32.
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
PageSize = Annotated[
    int,
    Query(ge=_INT32_MIN, le=_INT32_MAX, description="Conversations per page, 1..100; 0 means 20"),
    BeforeValidator(_whole_number),
]


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return JSONResponse(body, status_code=status)


_POLICIES = {
    None: pb.DISCONNECT_POLICY_UNSPECIFIED,
    "cancel": pb.DISCONNECT_POLICY_CANCEL,
    "continue": pb.DISCONNECT_POLICY_CONTINUE,
}


def _chat_fields(body: models.ChatRequest) -> dict[str, Any]:
    """The turn's fields; a body without request_id takes the request's own (X-Request-ID)."""
    request_id.note_user(body.user_id)
    if body.request_id:
        request_id.adopt(body.request_id)
    info = request_id.current()
    turn_id = body.request_id or (info.request_id if info is not None else "")
    return {
        "message": body.message,
        "conversation_id": body.conversation_id or "",
        "user_id": body.user_id or "",
        "priority": body.priority,
        "new_conversation": body.new_conversation,
        "provider": body.provider or "",
        "model": body.model or "",
        "request_id": turn_id,
        "on_disconnect": _POLICIES[body.on_disconnect],
    }


async def _cancel_on_disconnect(request: Request, call: grpc.aio.Call) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            call.cancel()
            return


@router.get(
    "/health",
    tags=["status"],
    operation_id="Health",
    response_model=models.HealthResponse,
    responses={503: {"model": models.HealthResponse, "description": "The service is not serving"}},
)
async def health(upstream: UpstreamDep) -> Response:
    """Liveness of the gateway and health of the agent service (no auth)."""
    try:
        reply = await upstream.health.Check(health_pb2.HealthCheckRequest(), timeout=2.0)
    except grpc.aio.AioRpcError as exc:
        body = {
            "status": "unavailable",
            "service": "unreachable",
            "detail": exc.details() or "",
            "code": "unavailable",
        }
        return _json(body, 503)
    serving = reply.status == health_pb2.HealthCheckResponse.SERVING
    service = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status).lower()
    if serving:
        return _json({"status": "ok", "service": service})
    return _json({"status": "unavailable", "service": service, "code": "unavailable"}, 503)


@router.post(
    "/api/chat",
    tags=["chat"],
    operation_id="Chat",
    response_model=models.ChatResponse,
    responses=docs.CHAT_ERRORS,
)
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


@router.post(
    "/api/chat/stream",
    tags=["chat"],
    operation_id="ChatStream",
    responses={**docs.STREAM_OK, **docs.STREAM_ERRORS},
)
async def chat_stream(
    body: models.ChatRequest, request: Request, upstream: UpstreamDep
) -> ChatEventStream:
    """Run one chat turn and stream it as Server-Sent Events.

    Events: `queued` (request_id, position, estimated_wait_s; again when the
    position changes), `start`, `message` ({"text": delta}), `tool_call`,
    `tool_result`, then exactly one `done` (the /api/chat answer) or `error`
    (code, message). Comment lines keep idle connections alive.
    """
    fields = _chat_fields(body)
    metadata = _metadata(request)
    call = upstream.stub.ChatStream(
        pb.ChatStreamRequest(**fields), metadata=metadata, timeout=upstream.chat_timeout_s
    )
    return ChatEventStream(
        call,
        upstream.keepalive_s,
        stop=upstream.stop,
        reattach=upstream.reattacher(fields["request_id"], fields["user_id"], metadata),
    )


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


@router.get(
    "/api/requests/{request_id}/events",
    tags=["chat"],
    operation_id="WatchRequest",
    responses={**docs.STREAM_OK, **docs.WATCH_ERRORS},
)
async def watch_request(
    request_id: Annotated[str, Path(min_length=1, max_length=64)],
    request: Request,
    upstream: UpstreamDep,
    user_id: UserIdQuery = None,
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
    metadata = _metadata(request)
    call = upstream.stub.WatchRequest(
        pb.WatchRequestRequest(request_id=request_id, after_seq=after_seq, user_id=user_id or ""),
        metadata=metadata,
        timeout=upstream.chat_timeout_s,
    )
    return ChatEventStream(
        call,
        upstream.keepalive_s,
        upstream.stop,
        watch=True,
        after=after_seq,
        reattach=upstream.reattacher(request_id, user_id or "", metadata),
    )


@router.get(
    "/api/status",
    tags=["status"],
    operation_id="GetStatus",
    response_model=status_models.StatusResponse,
    responses=docs.STATUS_ERRORS,
)
async def status(request: Request, upstream: UpstreamDep, user_id: UserIdQuery = None) -> Response:
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
    operation_id="GetQueueStatus",
    response_model=models.QueueStatusResponse,
    responses=docs.REF_ERRORS,
)
async def queue_status(
    body: models.RequestRef, request: Request, upstream: UpstreamDep
) -> Response:
    """A request's state and its position in the queue (owner only)."""
    request_id.note_user(body.user_id)
    reply = await upstream.stub.GetQueueStatus(
        pb.GetQueueStatusRequest(request_id=body.request_id, user_id=body.user_id or ""),
        metadata=_metadata(request),
        timeout=_STATUS_TIMEOUT_S,
    )
    return _json(convert.queue_status(reply))


@router.post(
    "/api/queue/cancel",
    tags=["queue"],
    operation_id="CancelRequest",
    response_model=models.CancelResponse,
    responses=docs.REF_ERRORS,
)
async def queue_cancel(
    body: models.RequestRef, request: Request, upstream: UpstreamDep
) -> Response:
    """Cancel a queued or running request (owner only)."""
    request_id.note_user(body.user_id)
    reply = await upstream.stub.CancelRequest(
        pb.CancelRequestRequest(request_id=body.request_id, user_id=body.user_id or ""),
        metadata=_metadata(request),
        timeout=_STATUS_TIMEOUT_S,
    )
    return _json(convert.cancel(reply))


@router.get(
    "/api/queue",
    tags=["queue"],
    operation_id="ListRequests",
    response_model=models.RequestListResponse,
    responses=docs.LIST_ERRORS,
)
async def list_requests(
    request: Request, upstream: UpstreamDep, user_id: UserIdQuery = None
) -> Response:
    """Requests waiting or running: yours, or every user's when your token is an admin's."""
    reply = await upstream.stub.ListRequests(
        pb.ListRequestsRequest(user_id=user_id or ""),
        metadata=_metadata(request),
        timeout=_STATUS_TIMEOUT_S,
    )
    return _json(convert.request_list(reply))


@router.get(
    "/api/conversations",
    tags=["conversations"],
    operation_id="ListConversations",
    response_model=models.ConversationListResponse,
    responses=docs.LIST_ERRORS,
)
async def list_conversations(
    request: Request,
    upstream: UpstreamDep,
    user_id: UserIdQuery = None,
    page_size: PageSize = 0,
    page_token: Annotated[str, Query(max_length=512)] = "",
) -> Response:
    """The caller's conversations, most recently active first.

    `page_size` is 1..100 (0 or absent: 20); pass the response's
    `next_page_token` as `page_token` for the next page.
    """
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


MessagePageSize = Annotated[
    int,
    Query(ge=_INT32_MIN, le=_INT32_MAX, description="Messages per page, 1..500; 0 means 100"),
    BeforeValidator(_whole_number),
]


@router.get(
    "/api/conversations/{conversation_id}",
    tags=["conversations"],
    operation_id="GetConversation",
    response_model=models.ConversationResponse,
    responses=docs.CONVERSATION_ERRORS,
)
async def get_conversation(
    conversation_id: str,
    request: Request,
    upstream: UpstreamDep,
    user_id: UserIdQuery = None,
    page_size: MessagePageSize = 0,
    page_token: Annotated[
        str, Query(max_length=1024, description="next_page_token of the previous page")
    ] = "",
) -> Response:
    """One of the caller's conversations and a page of its messages, oldest first.

    `page_size` is 1..500 (0 or absent: 100); pass the response's
    `next_page_token` as `page_token` for the next, later messages.
    """
    reply = await upstream.stub.GetConversation(
        pb.GetConversationRequest(
            conversation_id=conversation_id,
            user_id=user_id or "",
            page_size=page_size,
            page_token=page_token,
        ),
        metadata=_metadata(request),
        timeout=_STATUS_TIMEOUT_S,
    )
    return _json(convert.conversation(reply))


@router.delete(
    "/api/conversations/{conversation_id}",
    tags=["conversations"],
    operation_id="DeleteConversation",
    response_model=models.DeleteResponse,
    responses=docs.CONVERSATION_ERRORS,
)
async def delete_conversation(
    conversation_id: str,
    request: Request,
    upstream: UpstreamDep,
    user_id: UserIdQuery = None,
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
