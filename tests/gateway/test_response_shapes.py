"""Every field the gateway's converters write is in the document, and nothing else.

The converters are fed replies with every field set (repeated fields with an
element, optional fields present), and the answers are checked against the
OpenAPI document with extra properties forbidden (``tests.openapi_check``).
"""

from __future__ import annotations

import json

import httpx
from agent.v1 import agent_pb2 as pb

from gateway import convert
from gateway.errors import GatewayError
from gateway.sse import encode
from tests.openapi_check import gateway_check

JSON = httpx.Headers({"content-type": "application/json"})
SSE = httpx.Headers({"content-type": "text/event-stream; charset=utf-8"})


def _full_status() -> pb.GetStatusResponse:
    host = pb.HostStatus(
        url="http://h:11434",
        state=pb.HOST_STATE_UP,
        slots=2,
        running=1,
        models=["llama3.2"],
        models_loaded=["llama3.2"],
        last_error="",
    )
    host.state_since.FromSeconds(1_700_000_000)
    queue = pb.ProviderQueueStats(
        provider="ollama", slots=2, running=1, waiting=3, hosts=[host], waiting_by_priority={5: 3}
    )
    reply = pb.GetStatusResponse(
        status="ok",
        provider="ollama",
        model="llama3.2",
        version="0.1.0",
        providers=[pb.ProviderStatus(name="ollama", model="llama3.2", model_available=True)],
        queue_stats=pb.QueueStats(waiting=3, running=1, providers=[queue]),
        active_users=2,
        user_id="alice",
        mcp_servers=[
            pb.McpServerStatus(
                name="time", transport="stdio", state=pb.MCP_SERVER_STATE_READY, tools=["t"]
            )
        ],
        user_limits=pb.UserLimits(tier="free", requests_per_minute=10),
        user_budget=pb.TokenBudget(spent_today=5, left_today=95, left_this_month=995),
        caller_admin=True,
        identity_source="user_token",
    )
    reply.user_budget.day_reset_time.FromSeconds(1_700_000_000)
    return reply


def _problems(method: str, path: str, status: int, body: object) -> list[str]:
    return gateway_check().problems(method, path, status, JSON, json.dumps(body).encode())


def test_a_full_status_answer_matches_the_document_exactly() -> None:
    body = convert.status(_full_status())
    assert body["queue_stats"]["providers"][0]["hosts"]  # the deep parts are really there
    assert body["mcp_servers"] and body["user_budget"]["left_today"] == 95
    assert _problems("GET", "/api/status", 200, body) == []


def test_the_check_refuses_a_field_the_document_does_not_name() -> None:
    body = convert.status(_full_status())
    body["queue_stats"]["providers"][0]["surprise"] = 1
    [problem] = _problems("GET", "/api/status", 200, body)
    assert "surprise" in problem


def test_an_error_body_with_a_reason_matches_the_document() -> None:
    error = GatewayError(503, "unavailable", "down", retry_after_s=2.0, reason="PROVIDER_FAILED")
    assert _problems("POST", "/api/chat", 503, error.body()) == []


def test_every_stream_event_matches_its_own_schema() -> None:
    call = pb.ToolCallEvent(id="t1", name="calculator", arguments_json='{"expression": "1+1"}')
    events = [
        pb.ChatStreamResponse(queued=pb.QueuedEvent(request_id="r", position=1), seq=1),
        pb.ChatStreamResponse(start=pb.StartEvent(request_id="r", provider="ollama"), seq=2),
        pb.ChatStreamResponse(text_delta=pb.TextDeltaEvent(text="hi"), seq=3),
        pb.ChatStreamResponse(tool_call=call, seq=4),
        pb.ChatStreamResponse(tool_result=pb.ToolResultEvent(id="t1", result="2"), seq=5),
        pb.ChatStreamResponse(done=pb.ChatResponse(response="hi", tool_calls=[]), seq=6),
    ]
    frames = [encode(*convert.stream_event(e), e.seq) for e in events]
    error = GatewayError(429, "resource_exhausted", "full", retry_after_s=1.0, reason="X")
    frames.append(encode("error", error.event_data(), 7))
    body = b"".join(frames)
    assert gateway_check().problems("POST", "/api/chat/stream", 200, SSE, body) == []
    # An unnumbered frame, or a field the event's schema lacks, is caught.
    bad = encode("message", {"text": "x", "extra": 1}, 8)
    assert gateway_check().problems("POST", "/api/chat/stream", 200, SSE, body + bad)
    unnumbered = b'event: message\ndata: {"text":"x"}\n\n'
    assert gateway_check().problems("POST", "/api/chat/stream", 200, SSE, unnumbered)
