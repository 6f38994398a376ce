"""Domain objects to protobuf messages (and the few request fields back)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING

from agent.v1 import agent_pb2 as pb
from google.protobuf.timestamp_pb2 import Timestamp

from service.content import Block, TextBlock, ToolUseBlock, Usage
from service.events import ChatEvent, Queued, Started, ToolCalled, ToolReturned, TurnResult
from service.limits import LimitsReport, ResolvedLimits
from service.providers.base import TextDelta
from service.scheduler import HostStats, QueueStats, RequestInfo
from service.store.base import Conversation, StoredMessage

if TYPE_CHECKING:
    from service.tools.mcp_client import McpServerInfo

_STATES = {
    "queued": pb.REQUEST_STATE_QUEUED,
    "running": pb.REQUEST_STATE_RUNNING,
    "completed": pb.REQUEST_STATE_COMPLETED,
    "cancelled": pb.REQUEST_STATE_CANCELLED,
    "failed": pb.REQUEST_STATE_FAILED,
}
_MESSAGE_STATUS = {
    "complete": pb.MESSAGE_STATUS_COMPLETE,
    "cancelled": pb.MESSAGE_STATUS_CANCELLED,
    "failed": pb.MESSAGE_STATUS_FAILED,
}

_MCP_STATES = {
    "connecting": pb.MCP_SERVER_STATE_CONNECTING,
    "ready": pb.MCP_SERVER_STATE_READY,
    "unavailable": pb.MCP_SERVER_STATE_UNAVAILABLE,
    "stopped": pb.MCP_SERVER_STATE_STOPPED,
}


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _timestamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def usage(u: Usage) -> pb.Usage:
    return pb.Usage(
        input_tokens=u.input_tokens,
        output_tokens=u.output_tokens,
        cache_creation_input_tokens=u.cache_creation_input_tokens,
        cache_read_input_tokens=u.cache_read_input_tokens,
    )


def chat_response(r: TurnResult) -> pb.ChatResponse:
    return pb.ChatResponse(
        response=r.response,
        conversation_id=r.conversation_id,
        request_id=r.request_id,
        usage=usage(r.usage),
        provider=r.provider,
        model=r.model,
        stop_reason=r.stop_reason,
        tool_calls=[
            pb.ToolInvocation(
                id=t.id,
                name=t.name,
                arguments_json=_json(t.arguments),
                result=t.result,
                is_error=t.is_error,
            )
            for t in r.tool_calls
        ],
    )


def stream_event(event: ChatEvent, seq: int = 0) -> pb.ChatStreamResponse:
    if isinstance(event, TextDelta):
        return pb.ChatStreamResponse(text_delta=pb.TextDeltaEvent(text=event.text), seq=seq)
    if isinstance(event, Queued):
        return pb.ChatStreamResponse(
            queued=pb.QueuedEvent(
                request_id=event.request_id,
                position=event.position,
                estimated_wait_s=event.estimated_wait_s,
            ),
            seq=seq,
        )
    if isinstance(event, Started):
        return pb.ChatStreamResponse(
            start=pb.StartEvent(
                request_id=event.request_id,
                conversation_id=event.conversation_id,
                provider=event.provider,
                model=event.model,
            ),
            seq=seq,
        )
    if isinstance(event, ToolCalled):
        return pb.ChatStreamResponse(
            tool_call=pb.ToolCallEvent(
                id=event.id, name=event.name, arguments_json=_json(event.arguments)
            ),
            seq=seq,
        )
    if isinstance(event, ToolReturned):
        return pb.ChatStreamResponse(
            tool_result=pb.ToolResultEvent(
                id=event.id, name=event.name, result=event.result, is_error=event.is_error
            ),
            seq=seq,
        )
    return pb.ChatStreamResponse(done=chat_response(event), seq=seq)


def request_state(info: RequestInfo) -> pb.RequestState:
    return _STATES.get(info.state, pb.REQUEST_STATE_UNSPECIFIED)


def queue_status(info: RequestInfo) -> pb.GetQueueStatusResponse:
    return pb.GetQueueStatusResponse(
        request_id=info.request_id,
        state=request_state(info),
        position=info.position,
        estimated_wait_s=info.estimated_wait_s,
        priority=info.priority,
        provider=info.provider,
    )


def queue_stats(stats: QueueStats) -> pb.QueueStats:
    return pb.QueueStats(
        waiting=stats.total_waiting,
        running=stats.total_running,
        max_pending=stats.max_pending,
        max_pending_per_user=stats.max_pending_per_user,
        providers=[
            pb.ProviderQueueStats(
                provider=p.provider,
                slots=p.slots,
                running=p.running,
                waiting=p.waiting,
                waiting_by_priority=dict(p.waiting_by_priority),
                avg_wait_s=p.avg_wait_s,
                avg_service_s=p.avg_service_s,
                hosts=[_host(h) for h in p.hosts],
            )
            for p in stats.providers.values()
        ],
    )


def _host(h: HostStats) -> pb.HostStatus:
    since = Timestamp()
    since.FromNanoseconds(int(h.since * 1e9))
    return pb.HostStatus(
        url=h.name,
        state=pb.HOST_STATE_UP if h.up else pb.HOST_STATE_DOWN,
        state_since=since,
        slots=h.slots,
        running=h.running,
        models_loaded=list(h.loaded),
        last_error=h.last_error,
        models=list(h.models),
    )


def summary(c: Conversation) -> pb.ConversationSummary:
    return pb.ConversationSummary(
        conversation_id=c.id,
        title=c.title,
        create_time=_timestamp(c.created_at),
        update_time=_timestamp(c.updated_at),
        message_count=c.message_count,
    )


def _block(b: Block) -> pb.ContentBlock:
    if isinstance(b, TextBlock):
        return pb.ContentBlock(text=pb.TextContent(text=b.text))
    if isinstance(b, ToolUseBlock):
        return pb.ContentBlock(
            tool_use=pb.ToolUseContent(id=b.id, name=b.name, input_json=_json(b.input))
        )
    return pb.ContentBlock(
        tool_result=pb.ToolResultContent(
            tool_use_id=b.tool_use_id, content=b.content, is_error=b.is_error, name=b.name
        )
    )


def message(m: StoredMessage) -> pb.ConversationMessage:
    return pb.ConversationMessage(
        role=m.role,
        content=[_block(b) for b in m.content],
        status=_MESSAGE_STATUS.get(m.status, pb.MESSAGE_STATUS_UNSPECIFIED),
        provider=m.provider,
        model=m.model,
        usage=pb.Usage(
            input_tokens=m.input_tokens,
            output_tokens=m.output_tokens,
            cache_creation_input_tokens=m.cache_creation_input_tokens,
            cache_read_input_tokens=m.cache_read_input_tokens,
        ),
        create_time=_timestamp(m.created_at),
        request_id=m.request_id,
        text="".join(b.text for b in m.content if isinstance(b, TextBlock)),
    )


def mcp_server(info: McpServerInfo) -> pb.McpServerStatus:
    return pb.McpServerStatus(
        name=info.name,
        transport=info.transport,
        state=_MCP_STATES.get(info.state, pb.MCP_SERVER_STATE_UNSPECIFIED),
        tools=list(info.tools),
        last_error=info.last_error,
        restarts=info.restarts,
    )


def request_summary(info: RequestInfo) -> pb.RequestSummary:
    summary = pb.RequestSummary(
        request_id=info.request_id,
        user_id=info.user_id,
        state=request_state(info),
        position=info.position,
        estimated_wait_s=info.estimated_wait_s,
        priority=info.priority,
        provider=info.provider,
        model=info.model,
    )
    if info.enqueued_at is not None:
        summary.enqueue_time.FromNanoseconds(int(info.enqueued_at * 1e9))
    if info.started_at is not None:
        summary.start_time.FromNanoseconds(int(info.started_at * 1e9))
    return summary


def user_limits(limits: ResolvedLimits) -> pb.UserLimits:
    return pb.UserLimits(
        tier=limits.tier,
        requests_per_minute=limits.requests_per_minute,
        max_active=limits.max_active,
        tokens_per_day=limits.tokens_per_day,
        tokens_per_month=limits.tokens_per_month,
        max_output_tokens=limits.max_output_tokens,
    )


def token_budget(report: LimitsReport) -> pb.TokenBudget:
    budget = pb.TokenBudget(
        spent_today=report.spent_today,
        spent_this_month=report.spent_this_month,
        day_reset_time=_timestamp(report.day_resets_at),
        month_reset_time=_timestamp(report.month_resets_at),
    )
    if report.left_today is not None:
        budget.left_today = report.left_today
    if report.left_this_month is not None:
        budget.left_this_month = report.left_this_month
    return budget
