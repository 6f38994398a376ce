"""Switching api.provider changes nothing a client sees except the answers."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ProviderStack
from tests.e2e.stack import ANTHROPIC_KEY, launch, provider_config, stream_events
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.ollama import FakeOllama
from tests.fakes.script import Reply
from tests.gateway_http import gateway_client


def user() -> str:
    return f"p-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def http(provider_stack: ProviderStack) -> httpx.Client:
    with gateway_client(provider_stack.stack.url, timeout=20) as c:
        yield c


def test_chat_and_stream(provider_stack: ProviderStack, http: httpx.Client) -> None:
    r = http.post("/api/chat", json={"message": "ping", "user_id": user()})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["response"] == "echo: ping"
    assert body["provider"] == provider_stack.name and body["model"] == provider_stack.model
    assert body["usage"]["output_tokens"] > 0

    provider_stack.fake.push(Reply.text("Str", "eam", "ed."))
    events = stream_events(http, "/api/chat/stream", {"message": "go", "user_id": user()})
    assert [e.event for e in events] == ["start", "message", "message", "message", "done"]
    assert events[-1].data["response"] == "Streamed."
    assert events[-1].data["provider"] == provider_stack.name


def test_tool_round_streams_and_persists(provider_stack: ProviderStack, http: httpx.Client) -> None:
    fake = provider_stack.fake
    fake.push(Reply.tool("calculator", {"expression": "6*7"}), Reply.text("It is ", "42."))
    who = user()
    events = stream_events(http, "/api/chat/stream", {"message": "what is 6*7?", "user_id": who})
    names = [e.event for e in events]
    assert names == ["start", "tool_call", "tool_result", "message", "message", "done"], names
    call, result = events[1].data, events[2].data
    assert call["name"] == "calculator" and call["arguments"] == {"expression": "6*7"}
    assert result == {"id": call["id"], "name": "calculator", "result": "42", "is_error": False}
    done = events[-1].data
    assert done["response"] == "It is 42."
    assert done["tool_calls"][0]["result"] == "42"

    # The result went back to the model in the provider's own format.
    second = fake.chats[-1].json["messages"]
    if provider_stack.name == "anthropic":
        block = second[-1]["content"][0]
        assert second[-1]["role"] == "user" and block["type"] == "tool_result"
        assert block["tool_use_id"] == call["id"] and block["content"] == "42"
        assert second[-2]["content"][-1]["type"] == "tool_use"
    else:
        assert second[-1] == {"role": "tool", "content": "42", "tool_name": "calculator"}
        assert second[-2]["tool_calls"][0]["function"]["name"] == "calculator"

    stored = http.get(f"/api/conversations/{done['conversation_id']}", params={"user_id": who})
    kinds = [[b["type"] for b in m["content"]] for m in stored.json()["messages"]]
    assert kinds == [["text"], ["tool_use"], ["tool_result"], ["text"]]


def test_failing_tool_gives_an_error_result_and_an_answer(
    provider_stack: ProviderStack, http: httpx.Client
) -> None:
    provider_stack.fake.push(
        Reply.tool("calculator", {"expression": "1/0"}), Reply.text("Cannot divide by zero.")
    )
    r = http.post("/api/chat", json={"message": "1/0?", "user_id": user()})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["response"] == "Cannot divide by zero."
    assert body["tool_calls"][0]["is_error"] is True
    assert "zero" in body["tool_calls"][0]["result"]


@pytest.mark.parametrize(
    ("reply", "status", "code"),
    [
        (Reply.error(401), 503, "failed_precondition"),
        (Reply.error(404), 404, "not_found"),
        (Reply.error(400, "bad thing"), 400, "invalid_argument"),
        (Reply.error(413), 400, "invalid_argument"),
        (Reply.error(429, headers={"retry-after": "7"}), 429, "resource_exhausted"),
        (Reply.error(503, headers={"retry-after": "3"}), 503, "unavailable"),
        (Reply.error(500), 503, "unavailable"),
        (Reply(hang_after=0), 504, "deadline_exceeded"),
    ],
    ids=["401", "404", "400", "413", "429", "503", "500", "hang"],
)
def test_upstream_errors_map_to_http(
    provider_stack: ProviderStack, http: httpx.Client, reply: Reply, status: int, code: str
) -> None:
    if provider_stack.name == "anthropic" and reply.status == 503:
        reply = Reply.error(529, headers={"retry-after": "3"})
    provider_stack.fake.push(reply)
    r = http.post("/api/chat", json={"message": "x", "user_id": user()})
    assert r.status_code == status, r.text
    body = r.json()
    assert body["code"] == code and body["detail"]
    if reply.headers:  # the upstream's hint is passed on
        assert int(r.headers["retry-after"]) == int(reply.headers["retry-after"])
    if reply.status == 401:  # the operator's problem: no retry hint, the provider named
        assert "retry-after" not in r.headers
        assert body["reason"] == "PROVIDER_CREDENTIALS_REJECTED"
        assert provider_stack.name.capitalize() in body["detail"]


GARBAGE = {
    "ollama": b"this is not JSON\n",
    "anthropic": b"event: content_block_delta\ndata: {this is not JSON\n\n",
}


def test_an_invalid_line_mid_stream_is_a_bad_gateway(
    provider_stack: ProviderStack, http: httpx.Client
) -> None:
    garbage = GARBAGE[provider_stack.name]
    provider_stack.fake.push(Reply.text("a", "b", garbage=garbage, garbage_after=1))
    r = http.post("/api/chat", json={"message": "x", "user_id": user()})
    assert r.status_code == 502, r.text
    assert r.json()["reason"] == "PROVIDER_INVALID_RESPONSE"
    assert "retry-after" not in r.headers

    provider_stack.fake.push(Reply.text("a", "b", garbage=garbage, garbage_after=1))
    events = stream_events(http, "/api/chat/stream", {"message": "x", "user_id": user()})
    assert [e.event for e in events] == ["start", "message", "error"]
    assert events[-1].data["code"] == "unavailable"


def test_mid_stream_error_comes_after_the_deltas(
    provider_stack: ProviderStack, http: httpx.Client
) -> None:
    provider_stack.fake.push(Reply.text("a", "b", "c", fail_after=2))
    events = stream_events(http, "/api/chat/stream", {"message": "x", "user_id": user()})
    assert [e.event for e in events] == ["start", "message", "message", "error"]
    assert events[-1].data["code"] == "unavailable"


def test_truncated_stream_is_an_error_not_a_short_answer(
    provider_stack: ProviderStack, http: httpx.Client
) -> None:
    provider_stack.fake.push(Reply.text("a", "b", "c", truncate_after=1))
    events = stream_events(http, "/api/chat/stream", {"message": "x", "user_id": user()})
    assert events[-1].event == "error"
    assert "done" not in [e.event for e in events]


def test_status_reports_the_provider_reachable(
    provider_stack: ProviderStack, http: httpx.Client
) -> None:
    body = http.get("/api/status").json()
    assert body["provider"] == provider_stack.name and body["status"] == "ok"
    entry = next(p for p in body["providers"] if p["name"] == provider_stack.name)
    assert entry["reachable"] is True and entry["model"] == provider_stack.model


def test_an_anthropic_rate_limit_longer_than_the_first_byte_timeout_is_a_429(
    tmp_path: Path,
) -> None:
    """The provider's hint reaches the client, and the slot is free for the next request."""
    with FakeOllama() as ollama, FakeAnthropic(api_key=ANTHROPIC_KEY) as anthropic:
        config = provider_config("anthropic", ollama, anthropic)
        config["anthropic"].update(max_retries=2, max_concurrency=1)
        config["providers"] = {"first_byte_timeout_s": 1.0}
        stack = launch(tmp_path, config)
        try:
            anthropic.push(Reply.error(429, headers={"retry-after": "30"}))
            with gateway_client(stack.url, timeout=20) as http:
                r = http.post("/api/chat", json={"message": "x", "user_id": user()})
                assert r.status_code == 429, r.text
                assert r.headers["retry-after"] == "30"
                assert r.json()["reason"] == "PROVIDER_RATE_LIMITED"
                assert len(anthropic.chats) == 1  # no retry slept through the hint
                ok = http.post("/api/chat", json={"message": "again", "user_id": user()})
                assert ok.status_code == 200, ok.text
        finally:
            stack.stop()
