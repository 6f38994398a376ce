"""Protobuf messages to the JSON shapes of the REST API, field by field.

Hand-written rather than json_format.MessageToDict: it is on the hot path,
and the REST names (``response``, lower-case states, ``arguments`` as an
object) are the original spec's, not protobuf's JSON mapping.
"""

from __future__ import annotations

import json
from typing import Any

from agent.v1 import agent_pb2 as pb
from google.protobuf.timestamp_pb2 import Timestamp


def _arguments(text: str) -> Any:
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return {"_raw": text}


def _time(ts: Timestamp) -> str:
    if not ts.seconds and not ts.nanos:
        return ""
    return ts.ToDatetime().isoformat() + "Z"


def usage(u: pb.Usage) -> dict[str, int]:
    return {
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cache_creation_input_tokens": u.cache_creation_input_tokens,
        "cache_read_input_tokens": u.cache_read_input_tokens,
    }


def chat_response(r: pb.ChatResponse) -> dict[str, Any]:
    return {
        "response": r.response,
        "conversation_id": r.conversation_id,
        "request_id": r.request_id,
        "usage": usage(r.usage),
        "provider": r.provider,
        "model": r.model,
        "stop_reason": r.stop_reason,
        "tool_calls": [
            {
                "id": t.id,
                "name": t.name,
                "arguments": _arguments(t.arguments_json),
                "result": t.result,
                "is_error": t.is_error,
            }
            for t in r.tool_calls
        ],
    }


def stream_event(event: pb.ChatStreamResponse) -> tuple[str, dict[str, Any]]:
    """The SSE event name and data of one stream message."""
    kind = event.WhichOneof("event")
    if kind == "text_delta":
        return "message", {"text": event.text_delta.text}
    if kind == "queued":
        q = event.queued
        return "queued", {
            "request_id": q.request_id,
            "position": q.position,
            "estimated_wait_s": round(q.estimated_wait_s, 3),
        }
    if kind == "start":
        s = event.start
        return "start", {
            "request_id": s.request_id,
            "conversation_id": s.conversation_id,
            "provider": s.provider,
            "model": s.model,
        }
    if kind == "tool_call":
        c = event.tool_call
        return "tool_call", {"id": c.id, "name": c.name, "arguments": _arguments(c.arguments_json)}
    if kind == "tool_result":
        t = event.tool_result
        return "tool_result", {
            "id": t.id,
            "name": t.name,
            "result": t.result,
            "is_error": t.is_error,
        }
    if kind == "done":
        return "done", chat_response(event.done)
    raise ValueError(f"unknown stream event {kind!r}")


_STATES: dict[int, str] = {
    pb.REQUEST_STATE_QUEUED: "queued",
    pb.REQUEST_STATE_RUNNING: "running",
    pb.REQUEST_STATE_COMPLETED: "completed",
    pb.REQUEST_STATE_CANCELLED: "cancelled",
    pb.REQUEST_STATE_FAILED: "failed",
}

_MCP_STATE: dict[int, str] = {
    pb.MCP_SERVER_STATE_CONNECTING: "connecting",
    pb.MCP_SERVER_STATE_READY: "ready",
    pb.MCP_SERVER_STATE_UNAVAILABLE: "unavailable",
    pb.MCP_SERVER_STATE_STOPPED: "stopped",
}

_MESSAGE_STATUS: dict[int, str] = {
    pb.MESSAGE_STATUS_COMPLETE: "complete",
    pb.MESSAGE_STATUS_CANCELLED: "cancelled",
    pb.MESSAGE_STATUS_FAILED: "failed",
}


def state(value: int) -> str:
    return _STATES.get(value, "unspecified")


def queue_status(r: pb.GetQueueStatusResponse) -> dict[str, Any]:
    return {
        "request_id": r.request_id,
        "state": state(r.state),
        "position": r.position,
        "estimated_wait_s": round(r.estimated_wait_s, 3),
        "priority": r.priority,
        "provider": r.provider,
    }


def cancel(r: pb.CancelRequestResponse) -> dict[str, Any]:
    return {"request_id": r.request_id, "state": state(r.state), "cancelled": r.cancelled}


def request_list(r: pb.ListRequestsResponse) -> dict[str, Any]:
    return {
        "requests": [
            {
                "request_id": q.request_id,
                "user_id": q.user_id,
                "state": state(q.state),
                "position": q.position,
                "estimated_wait_s": round(q.estimated_wait_s, 3),
                "priority": q.priority,
                "provider": q.provider,
                "model": q.model,
                "enqueued_at": _time(q.enqueue_time) if q.HasField("enqueue_time") else None,
                "started_at": _time(q.start_time) if q.HasField("start_time") else None,
            }
            for q in r.requests
        ],
        "all_users": r.all_users,
    }


def _limits(u: pb.UserLimits) -> dict[str, Any]:
    return {
        "tier": u.tier,
        "requests_per_minute": u.requests_per_minute,
        "max_active": u.max_active,
        "tokens_per_day": u.tokens_per_day,
        "tokens_per_month": u.tokens_per_month,
        "max_output_tokens": u.max_output_tokens,
    }


def _budget(b: pb.TokenBudget) -> dict[str, Any]:
    return {
        "spent_today": b.spent_today,
        "spent_this_month": b.spent_this_month,
        "left_today": b.left_today if b.HasField("left_today") else None,
        "left_this_month": b.left_this_month if b.HasField("left_this_month") else None,
        "day_resets_at": _time(b.day_reset_time),
        "month_resets_at": _time(b.month_reset_time),
    }


def summary(c: pb.ConversationSummary) -> dict[str, Any]:
    return {
        "conversation_id": c.conversation_id,
        "title": c.title,
        "created_at": _time(c.create_time),
        "updated_at": _time(c.update_time),
        "message_count": c.message_count,
    }


def _block(b: pb.ContentBlock) -> dict[str, Any]:
    kind = b.WhichOneof("block")
    if kind == "text":
        return {"type": "text", "text": b.text.text}
    if kind == "tool_use":
        u = b.tool_use
        return {"type": "tool_use", "id": u.id, "name": u.name, "input": _arguments(u.input_json)}
    r = b.tool_result
    return {
        "type": "tool_result",
        "tool_use_id": r.tool_use_id,
        "name": r.name,
        "content": r.content,
        "is_error": r.is_error,
    }


def conversation(r: pb.GetConversationResponse) -> dict[str, Any]:
    return {
        **summary(r.conversation),
        "messages": [
            {
                "role": m.role,
                "text": m.text,
                "content": [_block(b) for b in m.content],
                "status": _MESSAGE_STATUS.get(m.status, "unspecified"),
                "provider": m.provider,
                "model": m.model,
                "usage": usage(m.usage),
                "request_id": m.request_id,
                "created_at": _time(m.create_time),
            }
            for m in r.messages
        ],
        "next_page_token": r.next_page_token,
    }


_HOST_STATE = {pb.HOST_STATE_UP: "up", pb.HOST_STATE_DOWN: "down"}


def _host(h: pb.HostStatus) -> dict[str, Any]:
    return {
        "url": h.url,
        "state": _HOST_STATE.get(h.state, "unspecified"),
        "since": _time(h.state_since),
        "slots": h.slots,
        "running": h.running,
        "models": list(h.models),
        "models_loaded": list(h.models_loaded),
        "last_error": h.last_error,
    }


def status(r: pb.GetStatusResponse) -> dict[str, Any]:
    q = r.queue_stats
    return {
        "status": r.status,
        "provider": r.provider,
        "model": r.model,
        "version": r.version,
        "providers": [
            {
                "name": p.name,
                "model": p.model,
                "reachable": p.reachable,
                "detail": p.detail,
                "version": p.version,
                "model_available": p.model_available if p.HasField("model_available") else None,
            }
            for p in r.providers
        ],
        "queue_stats": {
            "waiting": q.waiting,
            "running": q.running,
            "max_pending": q.max_pending,
            "max_pending_per_user": q.max_pending_per_user,
            "providers": [
                {
                    "provider": p.provider,
                    "slots": p.slots,
                    "running": p.running,
                    "waiting": p.waiting,
                    "waiting_by_priority": {str(k): v for k, v in p.waiting_by_priority.items()},
                    "avg_wait_s": round(p.avg_wait_s, 3),
                    "avg_service_s": round(p.avg_service_s, 3),
                    "hosts": [_host(h) for h in p.hosts],
                }
                for p in q.providers
            ],
        },
        "active_users": r.active_users,
        "user_id": r.user_id,
        "user_usage": usage(r.user_usage),
        "mcp_servers": [
            {
                "name": m.name,
                "transport": m.transport,
                "state": _MCP_STATE.get(m.state, "unspecified"),
                "tools": list(m.tools),
                "last_error": m.last_error,
                "restarts": m.restarts,
            }
            for m in r.mcp_servers
        ],
        "user_limits": _limits(r.user_limits),
        "user_budget": _budget(r.user_budget),
        "caller_admin": r.caller_admin,
        "identity_source": r.identity_source,
    }
