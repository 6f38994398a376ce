"""Conversations, sessions, ownership, commands and usage, over the real stack."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.stack import Stack, launch, stream_events
from tests.fakes.ollama import FakeOllama
from tests.fakes.script import Reply
from tests.gateway_http import gateway_client

BUDGET_TOKENS = 300


def user() -> str:
    return f"c-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def profiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("profiles")


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, fake_ollama: FakeOllama, profiles: Path
) -> Iterator[Stack]:
    config = {
        "api": {"provider": "ollama", "history_budget_tokens": BUDGET_TOKENS},
        "ollama": {"url": fake_ollama.url, "model": "llama3.2", "parallel": 4},
        "profiles": {"directory": str(profiles)},
    }
    s = launch(tmp_path_factory.mktemp("conv"), config)
    yield s
    s.stop()


@pytest.fixture
def http(stack: Stack) -> Iterator[httpx.Client]:
    with gateway_client(stack.url, timeout=20) as c:
        yield c


def chat(http: httpx.Client, who: str, message: str, **extra: object) -> dict:
    r = http.post("/api/chat", json={"message": message, "user_id": who, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def texts(http: httpx.Client, who: str, conversation_id: str) -> list[tuple[str, str]]:
    r = http.get(f"/api/conversations/{conversation_id}", params={"user_id": who})
    assert r.status_code == 200, r.text
    return [(m["role"], m["text"]) for m in r.json()["messages"]]


def test_sessions_continue_and_new_ones_start_on_request(http: httpx.Client) -> None:
    who = user()
    first = chat(http, who, "one")
    assert chat(http, who, "two")["conversation_id"] == first["conversation_id"]
    fresh = chat(http, who, "three", new_conversation=True)
    assert fresh["conversation_id"] != first["conversation_id"]
    # Without an id, the most recent conversation continues.
    assert chat(http, who, "four")["conversation_id"] == fresh["conversation_id"]
    # An explicit id goes back to the older one.
    back = chat(http, who, "five", conversation_id=first["conversation_id"])
    assert back["conversation_id"] == first["conversation_id"]
    assert [t for _, t in texts(http, who, first["conversation_id"])] == [
        "one",
        "echo: one",
        "two",
        "echo: two",
        "five",
        "echo: five",
    ]
    new_cmd = chat(http, who, "/new")
    assert new_cmd["provider"] == "command"
    assert new_cmd["conversation_id"] not in (first["conversation_id"], fresh["conversation_id"])
    assert chat(http, who, "six")["conversation_id"] == new_cmd["conversation_id"]
    listed = http.get("/api/conversations", params={"user_id": who}).json()["conversations"]
    assert [c["conversation_id"] for c in listed] == [
        new_cmd["conversation_id"],
        first["conversation_id"],
        fresh["conversation_id"],
    ]


def test_unknown_conversation_is_404(http: httpx.Client) -> None:
    r = http.post("/api/chat", json={"message": "hi", "conversation_id": "nope", "user_id": user()})
    assert r.status_code == 404
    assert r.json()["code"] == "not_found"


def test_other_users_cannot_touch_a_conversation(http: httpx.Client) -> None:
    alice, bob = user(), user()
    conv = chat(http, alice, "secret plans")["conversation_id"]
    before = texts(http, alice, conv)

    assert http.get("/api/conversations", params={"user_id": bob}).json()["conversations"] == []
    read = http.get(f"/api/conversations/{conv}", params={"user_id": bob})
    cont = http.post("/api/chat", json={"message": "hi", "conversation_id": conv, "user_id": bob})
    stream = http.post(
        "/api/chat/stream", json={"message": "hi", "conversation_id": conv, "user_id": bob}
    )
    delete = http.delete(f"/api/conversations/{conv}", params={"user_id": bob})
    missing = http.get("/api/conversations/does-not-exist", params={"user_id": bob})
    for r in (read, cont, stream, delete):
        assert r.status_code == 404, r.text
        # Same answer as for a conversation that does not exist: existence never leaks.
        assert r.json()["detail"].replace(conv, "X") == missing.json()["detail"].replace(
            "does-not-exist", "X"
        )
    assert texts(http, alice, conv) == before

    assert http.delete(f"/api/conversations/{conv}", params={"user_id": alice}).status_code == 200
    assert http.get(f"/api/conversations/{conv}", params={"user_id": alice}).status_code == 404


def test_concurrent_turns_on_one_conversation_do_not_interleave(
    http: httpx.Client, stack: Stack, fake_ollama: FakeOllama
) -> None:
    who = user()
    conv = chat(http, who, "start")["conversation_id"]
    fake_ollama.push(
        Reply.text("first ", "answer", chunk_delay_s=0.05),
        Reply.text("second ", "answer", chunk_delay_s=0.05),
    )
    results: dict[str, list] = {}

    def send(label: str) -> None:
        with gateway_client(stack.url, timeout=20) as c:
            results[label] = stream_events(
                c, "/api/chat/stream", {"message": label, "conversation_id": conv, "user_id": who}
            )

    a = threading.Thread(target=send, args=("question A",))
    b = threading.Thread(target=send, args=("question B",))
    a.start()
    b.start()
    a.join()
    b.join()
    assert all(events[-1].event == "done" for events in results.values())
    history = texts(http, who, conv)
    assert history[:2] == [("user", "start"), ("assistant", "echo: start")]
    rest = history[2:]
    assert len(rest) == 4
    # user/assistant alternate: each answer directly follows its own question.
    assert [role for role, _ in rest] == ["user", "assistant", "user", "assistant"]
    assert {rest[0][1], rest[2][1]} == {"question A", "question B"}
    # The second turn saw the first turn's answer upstream: they ran one after the other.
    second_sent = fake_ollama.chats[-1].json["messages"]
    assert rest[1][1] in [m["content"] for m in second_sent]


def test_clear_empties_the_history(http: httpx.Client, fake_ollama: FakeOllama) -> None:
    who = user()
    conv = chat(http, who, "remember this")["conversation_id"]
    reply = chat(http, who, "/clear")
    assert reply["conversation_id"] == conv and "Cleared 2" in reply["response"]
    assert texts(http, who, conv) == []
    chat(http, who, "fresh start")
    sent = [m["content"] for m in fake_ollama.chats[-1].json["messages"] if m["role"] != "system"]
    assert sent == ["fresh start"]


def test_help_and_unknown_commands_never_reach_the_model(
    http: httpx.Client, fake_ollama: FakeOllama
) -> None:
    before = len(fake_ollama.chats)
    help_text = chat(http, user(), "/help")["response"]
    unknown = chat(http, user(), "/frobnicate")["response"]
    assert "/clear" in help_text and "/reload_user" in help_text
    assert "Unknown command /frobnicate" in unknown and "/help" in unknown
    assert len(fake_ollama.chats) == before


def test_reload_user_picks_up_an_edited_profile(
    http: httpx.Client, fake_ollama: FakeOllama, profiles: Path
) -> None:
    who = user()
    (profiles / f"{who}.yaml").write_text(
        "display_name: Ada\nsystem_prompt: Speak like a pirate.\n"
    )
    chat(http, who, "hello")
    system = fake_ollama.chats[-1].json["messages"][0]
    assert system["role"] == "system" and "Speak like a pirate." in system["content"]
    assert "Ada" in system["content"]

    (profiles / f"{who}.yaml").write_text("display_name: Ada\nsystem_prompt: Answer in French.\n")
    chat(http, who, "still cached")
    assert "Speak like a pirate." in fake_ollama.chats[-1].json["messages"][0]["content"]

    assert "Profile reloaded: Ada" in chat(http, who, "/reload_user")["response"]
    chat(http, who, "now?")
    system = fake_ollama.chats[-1].json["messages"][0]["content"]
    assert "Answer in French." in system and "pirate" not in system


def test_history_sent_upstream_is_bounded_but_storage_is_complete(
    http: httpx.Client, fake_ollama: FakeOllama
) -> None:
    who = user()
    conv = ""
    for i in range(12):
        conv = chat(http, who, f"message {i:02d} " + "x" * 120)["conversation_id"]
    stored = texts(http, who, conv)
    assert len(stored) == 24
    sent = [m for m in fake_ollama.chats[-1].json["messages"] if m["role"] != "system"]
    assert 0 < len(sent) < 24
    assert sum(len(m["content"]) for m in sent) // 4 <= BUDGET_TOKENS
    # The most recent turns are the ones kept, in order, starting with a user turn.
    assert sent[-1]["content"].startswith("message 11")
    assert sent[0]["role"] == "user"
    assert [m["content"] for m in sent] == [t for _, t in stored[-len(sent) - 1 : -1]]


def test_usage_is_reported_per_turn_and_per_user(http: httpx.Client) -> None:
    who = user()
    turns = [chat(http, who, f"count me {i}") for i in range(3)]
    total_in = sum(t["usage"]["input_tokens"] for t in turns)
    total_out = sum(t["usage"]["output_tokens"] for t in turns)
    assert total_in > 0 and total_out > 0
    status = http.get("/api/status", params={"user_id": who}).json()
    assert status["user_id"] == who
    assert status["user_usage"] == {
        "input_tokens": total_in,
        "output_tokens": total_out,
        "cache_creation_input_tokens": 0,  # Ollama reports no cache figures
        "cache_read_input_tokens": 0,
    }
    usage = chat(http, who, "/usage")["response"]
    assert f"{total_in} input" in usage and f"{total_out} output" in usage
    stored = http.get(
        f"/api/conversations/{turns[0]['conversation_id']}", params={"user_id": who}
    ).json()["messages"]
    assert stored[1]["usage"] == turns[0]["usage"]


def test_history_survives_a_service_restart(tmp_path: Path, fake_ollama: FakeOllama) -> None:
    config = {"api": {"provider": "ollama"}, "ollama": {"url": fake_ollama.url}}
    s = launch(tmp_path, config)
    try:
        with gateway_client(s.url, timeout=20) as c:
            who = user()
            conv = chat(c, who, "before restart")["conversation_id"]
            assert s.service is not None
            s.service.stop()
            s.start_service()
            s.wait_service_ready()
            after = chat(c, who, "after restart")
            assert after["conversation_id"] == conv
            sent = [m["content"] for m in fake_ollama.chats[-1].json["messages"]]
            assert "before restart" in sent and "echo: before restart" in sent
            assert [t for _, t in texts(c, who, conv)] == [
                "before restart",
                "echo: before restart",
                "after restart",
                "echo: after restart",
            ]
    finally:
        s.stop()


def test_a_turn_waiting_behind_its_conversation_can_be_seen_and_cancelled(
    http: httpx.Client, stack: Stack, fake_ollama: FakeOllama
) -> None:
    who = user()
    conv = chat(http, who, "start")["conversation_id"]
    fake_ollama.push(Reply.text("long ", "answer", chunk_delay_s=0.4))
    request_id = f"blocked-{uuid.uuid4().hex[:8]}"
    results: dict[str, list] = {}

    def send(label: str, **extra: object) -> None:
        with gateway_client(stack.url, timeout=20) as c:
            body = {"message": label, "conversation_id": conv, "user_id": who, **extra}
            results[label] = stream_events(c, "/api/chat/stream", body)

    first = threading.Thread(target=send, args=("running turn",))
    first.start()
    deadline = time.monotonic() + 5
    while len(fake_ollama.chats) == 0 or "running turn" not in str(fake_ollama.chats[-1].json):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    second = threading.Thread(
        target=send, args=("waiting turn",), kwargs={"request_id": request_id}
    )
    second.start()
    ref = {"request_id": request_id, "user_id": who}
    while (status := http.post("/api/queue/status", json=ref)).status_code == 404:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert (
        status.json()["state"] == "queued" and status.json()["position"] == 0
    )  # next once the running turn ends
    other = http.post("/api/queue/status", json={"request_id": request_id, "user_id": user()})
    assert other.status_code == 404
    cancel = http.post("/api/queue/cancel", json=ref)
    assert cancel.status_code == 200 and cancel.json()["cancelled"] is True
    second.join()
    first.join()
    assert [e.event for e in results["waiting turn"]] == ["queued", "error"]
    assert results["waiting turn"][-1].data["code"] == "cancelled"
    assert results["running turn"][-1].event == "done"
    assert "waiting turn" not in [t for _, t in texts(http, who, conv)]
