"""Domain objects to protobuf messages (and the few request fields back)."""

from __future__ import annotations

import json
from datetime import datetime

from agent.v1 import agent_pb2 as pb
from google.protobuf.timestamp_pb2 import Timestamp

from service.content import Block, TextBlock, ToolUseBlock, Usage
from service.events import ChatEvent, Queued, Started, ToolCalled, ToolReturned, TurnResult
from service.providers.base import TextDelta
from service.scheduler import QueueStats, RequestInfo
from service.store.base import Conversation, StoredMessage

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


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _timestamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def usage(u: Usage) -> pb.Usage:
    return pb.Usage(input_tokens=u.input_tokens, output_tokens=u.output_tokens)


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
            )
            for p in stats.providers.values()
        ],
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
        usage=pb.Usage(input_tokens=m.input_tokens, output_tokens=m.output_tokens),
        create_time=_timestamp(m.created_at),
        request_id=m.request_id,
        text="".join(b.text for b in m.content if isinstance(b, TextBlock)),
    )
