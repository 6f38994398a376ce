"""The vertical slice over real sockets: gateway (uvicorn) → service (grpc.aio) → fake Ollama."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.e2e.stack import SseEvent, Stack, free_port, launch, parse_sse, stream_events
from tests.fakes.ollama import FakeOllama
from tests.fakes.script import Reply
from tests.gateway_http import gateway_client


def user() -> str:
    return f"u-{uuid.uuid4().hex[:10]}"


def test_chat_returns_the_models_answer(client: httpx.Client, fake_ollama: FakeOllama) -> None:
    r = client.post("/api/chat", json={"message": "hello there", "user_id": user()})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["response"] == "echo: hello there"
    assert body["conversation_id"] and body["request_id"]
    assert body["provider"] == "ollama" and body["model"] == "llama3.2"
    assert body["stop_reason"] == "end_turn"
    assert body["usage"]["input_tokens"] > 0 and body["usage"]["output_tokens"] > 0
    sent = fake_ollama.chats[-1].json
    assert sent["stream"] is True and sent["model"] == "llama3.2"
    assert sent["messages"][-1] == {"role": "user", "content": "hello there"}


def test_stream_yields_start_deltas_and_one_done(
    client: httpx.Client, fake_ollama: FakeOllama
) -> None:
    fake_ollama.push(Reply.text("One", ", two", ", three."))
    events = stream_events(client, "/api/chat/stream", {"message": "count", "user_id": user()})
    names = [e.event for e in events]
    assert names[0] == "start"
    assert names[-1] == "done" and names.count("done") == 1 and "error" not in names
    deltas = [e.data["text"] for e in events if e.event == "message"]
    assert deltas == ["One", ", two", ", three."]
    done = events[-1].data
    assert done["response"] == "".join(deltas)
    assert events[0].data["request_id"] == done["request_id"]
    assert events[0].data["conversation_id"] == done["conversation_id"]
    assert events[0].data["provider"] == "ollama"


def test_health_and_status(client: httpx.Client) -> None:
    health = client.get("/health")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "service": "serving"}
    status = client.get("/api/status")
    assert status.status_code == 200
    body = status.json()
    assert body["provider"] == "ollama" and body["model"] == "llama3.2"
    assert body["status"] == "ok"
    ollama = next(p for p in body["providers"] if p["name"] == "ollama")
    assert ollama["reachable"] is True and ollama["version"]
    assert body["queue_stats"]["max_pending"] > 0
    assert body["version"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "message"),
        ({"message": ""}, "message"),
        ({"message": "   "}, "message"),
        ({"message": "hi", "priority": 0}, "priority"),
        ({"message": "hi", "priority": 11}, "priority"),
        ({"message": "hi", "priority": "high"}, "priority"),
    ],
)
@pytest.mark.parametrize("path", ["/api/chat", "/api/chat/stream"])
def test_bad_input_is_422_with_a_readable_detail(
    client: httpx.Client, path: str, body: dict, field: str
) -> None:
    r = client.post(path, json=body)
    assert r.status_code == 422
    payload = r.json()
    assert payload["code"] == "invalid_argument"
    assert field in payload["detail"]


def test_malformed_json_is_400_not_500(client: httpx.Client) -> None:
    r = client.post(
        "/api/chat", content=b'{"message": "hi"', headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    assert r.json()["code"] == "invalid_argument"
    assert r.json()["detail"].startswith("the body is not valid JSON at character 16")


def test_a_model_no_host_serves_is_a_clear_400(client: httpx.Client) -> None:
    # The host lists no models in the config, so the ones it has installed are what it serves.
    r = client.post("/api/chat", json={"message": "hi", "model": "nosuch-model", "user_id": user()})
    assert r.status_code == 400, r.text
    assert "nosuch-model" in r.json()["detail"]
    assert "served models: llama3.2:latest" in r.json()["detail"]


def test_ollama_down_is_503_naming_the_url(tmp_path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    config = {"api": {"provider": "ollama"}, "ollama": {"url": dead, "model": "llama3.2"}}
    stack: Stack = launch(tmp_path, config)
    try:
        with gateway_client(stack.url, timeout=20) as c:
            r = c.post("/api/chat", json={"message": "anyone there?"})
            assert r.status_code == 503, r.text
            assert dead in r.json()["detail"]
            # The refused connection marked the one host down: the stream is refused at
            # admission, like a full queue, with a hint to retry after the next probe.
            s = c.post("/api/chat/stream", json={"message": "and now?"})
            assert s.status_code == 503, s.text
            assert s.json()["code"] == "unavailable" and dead in s.json()["detail"]
            assert int(s.headers["retry-after"]) >= 1
            status = c.get("/api/status").json()
            assert status["status"] == "degraded"
    finally:
        stack.stop()


def test_conversation_continues(client: httpx.Client, fake_ollama: FakeOllama) -> None:
    who = user()
    first = client.post("/api/chat", json={"message": "first", "user_id": who}).json()
    second = client.post("/api/chat", json={"message": "second", "user_id": who}).json()
    assert second["conversation_id"] == first["conversation_id"]
    sent = fake_ollama.chats[-1].json["messages"]
    assert [m["content"] for m in sent if m["role"] != "system"] == [
        "first",
        "echo: first",
        "second",
    ]


def test_idle_streams_get_keepalive_comments(client: httpx.Client, fake_ollama: FakeOllama) -> None:
    fake_ollama.push(Reply.text("late", initial_delay_s=1.0))
    body = {"message": "slow please", "user_id": user()}
    with client.stream("POST", "/api/chat/stream", json=body) as response:
        items = list(parse_sse(response.iter_lines()))
    kinds = [i.event if isinstance(i, SseEvent) else "comment" for i in items]
    assert kinds[0] == "start" and kinds[-1] == "done"
    # Comments keep the idle connection alive between start and the first token.
    assert "comment" in kinds[1 : kinds.index("message")]


def test_declared_oversized_body_is_413_over_a_real_socket(client: httpx.Client) -> None:
    r = client.post(
        "/api/chat",
        content=b"{" + b" " * (3 * 1024 * 1024) + b"}",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413, r.text
    assert r.json()["code"] == "payload_too_large"
