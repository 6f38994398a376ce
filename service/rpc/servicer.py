"""AgentService handlers: authenticate, translate, call the domain, translate back."""

from __future__ import annotations

from importlib import metadata
from typing import TYPE_CHECKING

from agent.v1 import agent_pb2 as pb
from agent.v1 import agent_pb2_grpc

from service.auth import Authenticator, Principal
from service.chat import ChatService
from service.context import current_call
from service.errors import InvalidRequest
from service.events import TurnInput
from service.limits import Limits
from service.observability.metrics import ServiceMetrics
from service.rpc import convert, streaming
from service.rpc.errors import Context, abort, unary_errors
from service.rpc.forward import ReplicaForwarder
from service.scheduler.interface import RequestScheduler
from service.status import ProviderProbes
from service.store.base import ConversationStore
from service.streams import StreamingTurns

if TYPE_CHECKING:
    from service.tools.mcp_registry import McpTools

_DEFAULT_PAGE_SIZE = 20
# GetConversation pages: a long conversation never leaves in one response.
_DEFAULT_MESSAGE_PAGE = 100
_MAX_MESSAGE_PAGE = 500


def _version() -> str:
    try:
        return metadata.version("agent-service")
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"


def _turn(request: pb.ChatRequest | pb.ChatStreamRequest, user_id: str) -> TurnInput:
    return TurnInput(
        user_id=user_id,
        message=request.message,
        conversation_id=request.conversation_id,
        new_conversation=request.new_conversation,
        priority=request.priority if request.HasField("priority") else 5,
        provider=request.provider,
        model=request.model,
        # A turn without its own id runs under the call's request id: the caller's
        # x-request-id, or the one the interceptor minted. One id from the edge on.
        request_id=request.request_id or current_call().request_id,
    )


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):
    """The gRPC face of the service."""

    def __init__(
        self,
        *,
        auth: Authenticator,
        chat: ChatService,
        streams: StreamingTurns,
        scheduler: RequestScheduler,
        store: ConversationStore,
        probes: ProviderProbes,
        limits: Limits,
        default_provider: str,
        default_model: str,
        mcp: McpTools | None = None,
        metrics: ServiceMetrics | None = None,
        forwarder: ReplicaForwarder | None = None,
    ) -> None:
        self._forwarder = forwarder
        self._metrics = metrics or ServiceMetrics()
        self._auth = auth
        self._limits = limits
        self._chat = chat
        self._streams = streams
        self._scheduler = scheduler
        self._store = store
        self._probes = probes
        self._default_provider = default_provider
        self._default_model = default_model
        self._mcp = mcp
        self._version = _version()

    def _user(self, context: Context, requested: str) -> str:
        """The user this call acts as (the interceptor has authenticated the caller)."""
        return self._caller(context, requested)[1]

    def _caller(self, context: Context, requested: str) -> tuple[Principal, str]:
        """Who calls, and the user the call acts as."""
        call = current_call()
        call.user_id = self._auth.user_for(call.principal, requested)
        return call.principal, call.user_id

    async def _owner(self, principal: Principal, user_id: str, request_id: str) -> str:
        """The user whose request to look up: an admin reaches any user's waiting or running one."""
        if principal.admin:
            for info in await self._scheduler.requests(None):
                if info.request_id == request_id:
                    return info.user_id
        return user_id

    @unary_errors
    async def Chat(self, request: pb.ChatRequest, context: Context) -> pb.ChatResponse:
        """One turn, full answer (or the answer of the earlier request with this id)."""
        turn = _turn(request, self._user(context, request.user_id))
        result = await streaming.chat(self._streams, turn, streaming.policy(request))
        return convert.chat_response(result)

    async def ChatStream(self, request: pb.ChatStreamRequest, context: Context) -> None:
        """One turn, events as they happen; a failure ends the stream with its status."""
        try:
            turn = _turn(request, self._user(context, request.user_id))
        except Exception as exc:  # every failure must become a status
            await abort(context, exc)
        self._metrics.stream_opened()
        try:
            await streaming.chat_stream(self._streams, turn, streaming.policy(request), context)
        finally:
            self._metrics.stream_closed()

    async def WatchRequest(self, request: pb.WatchRequestRequest, context: Context) -> None:
        """Re-attach to a request's events (owner only)."""
        try:
            user_id = self._user(context, request.user_id)
        except Exception as exc:
            await abort(context, exc)
        await streaming.watch(self._streams, request, user_id, context, self._forwarder)

    @unary_errors
    async def GetStatus(
        self, request: pb.GetStatusRequest, context: Context
    ) -> pb.GetStatusResponse:
        """Provider, model, reachability, queue figures, active users, the caller's usage."""
        health = await self._probes.health()
        principal, user_id = self._caller(context, request.user_id)
        totals = await self._store.usage_totals(user_id)
        report = await self._limits.report(user_id)
        stats = await self._scheduler.stats()
        reachable = {name: h.reachable for name, h in health.items()}
        details = {name: h.detail for name, h in health.items()}
        for name, lane in stats.providers.items():
            if len(lane.hosts) > 1 and name in reachable:
                # A pool is reachable while any host is up: the probe above sees one host.
                up = sum(host.up for host in lane.hosts)
                reachable[name] = up > 0
                details[name] = f"{up} of {len(lane.hosts)} hosts up"
        providers = []
        for name, h in health.items():
            entry = pb.ProviderStatus(
                name=name,
                model=self._chat.model_of(name),
                reachable=reachable[name],
                detail=details[name],
                version=h.version,
            )
            if h.model_available is not None:
                entry.model_available = h.model_available
            providers.append(entry)
        return pb.GetStatusResponse(
            status="ok" if reachable.get(self._default_provider) else "degraded",
            provider=self._default_provider,
            model=self._default_model,
            providers=providers,
            queue_stats=convert.queue_stats(stats),
            active_users=stats.active_users,
            version=self._version,
            user_id=user_id,
            user_usage=pb.Usage(
                input_tokens=totals.input_tokens,
                output_tokens=totals.output_tokens,
                cache_creation_input_tokens=totals.cache_creation_input_tokens,
                cache_read_input_tokens=totals.cache_read_input_tokens,
            ),
            mcp_servers=[convert.mcp_server(s) for s in self._mcp.status()] if self._mcp else [],
            user_limits=convert.user_limits(report.limits),
            user_budget=convert.token_budget(report),
            caller_admin=principal.admin,
            identity_source=principal.mode,
        )

    @unary_errors
    async def GetQueueStatus(
        self, request: pb.GetQueueStatusRequest, context: Context
    ) -> pb.GetQueueStatusResponse:
        """A request's state and position (owner or admin only)."""
        principal, user_id = self._caller(context, request.user_id)
        _require(request.request_id, "request_id")
        user_id = await self._owner(principal, user_id, request.request_id)
        return convert.queue_status(await self._scheduler.status(request.request_id, user_id))

    @unary_errors
    async def CancelRequest(
        self, request: pb.CancelRequestRequest, context: Context
    ) -> pb.CancelRequestResponse:
        """Cancel a queued or running request (owner or admin only)."""
        principal, user_id = self._caller(context, request.user_id)
        _require(request.request_id, "request_id")
        user_id = await self._owner(principal, user_id, request.request_id)
        before = await self._scheduler.status(request.request_id, user_id)
        after = await self._scheduler.cancel(request.request_id, user_id)
        return pb.CancelRequestResponse(
            request_id=after.request_id,
            state=convert.request_state(after),
            cancelled=before.state in ("queued", "running") and after.state == "cancelled",
        )

    @unary_errors
    async def ListRequests(
        self, request: pb.ListRequestsRequest, context: Context
    ) -> pb.ListRequestsResponse:
        """Requests waiting or running: the caller's, or everyone's for an admin."""
        principal, user_id = self._caller(context, request.user_id)
        found = await self._scheduler.requests(None if principal.admin else user_id)
        return pb.ListRequestsResponse(
            requests=[convert.request_summary(info) for info in found],
            all_users=principal.admin,
        )

    @unary_errors
    async def ListConversations(
        self, request: pb.ListConversationsRequest, context: Context
    ) -> pb.ListConversationsResponse:
        """The caller's conversations, newest first."""
        user_id = self._user(context, request.user_id)
        page_size = request.page_size or _DEFAULT_PAGE_SIZE
        if not 1 <= page_size <= 100:
            raise InvalidRequest("page_size must be between 1 and 100")
        items, token = await self._store.list_conversations(user_id, page_size, request.page_token)
        return pb.ListConversationsResponse(
            conversations=[convert.summary(c) for c in items], next_page_token=token
        )

    @unary_errors
    async def GetConversation(
        self, request: pb.GetConversationRequest, context: Context
    ) -> pb.GetConversationResponse:
        """One conversation with a page of its messages, oldest first."""
        user_id = self._user(context, request.user_id)
        _require(request.conversation_id, "conversation_id")
        page_size = request.page_size or _DEFAULT_MESSAGE_PAGE
        if not 1 <= page_size <= _MAX_MESSAGE_PAGE:
            raise InvalidRequest(
                f"page_size must be between 1 and {_MAX_MESSAGE_PAGE} (0 means"
                f" {_DEFAULT_MESSAGE_PAGE}), got {request.page_size}"
            )
        conversation = await self._store.get_conversation(user_id, request.conversation_id)
        messages, token = await self._store.messages_page(
            user_id, request.conversation_id, page_size, request.page_token
        )
        return pb.GetConversationResponse(
            conversation=convert.summary(conversation),
            messages=[convert.message(m) for m in messages],
            next_page_token=token,
        )

    @unary_errors
    async def DeleteConversation(
        self, request: pb.DeleteConversationRequest, context: Context
    ) -> pb.DeleteConversationResponse:
        """Delete one conversation."""
        user_id = self._user(context, request.user_id)
        _require(request.conversation_id, "conversation_id")
        await self._store.delete_conversation(user_id, request.conversation_id)
        return pb.DeleteConversationResponse(conversation_id=request.conversation_id, deleted=True)


def _require(value: str, name: str) -> None:
    if not value:
        raise InvalidRequest(f"{name} is required")
