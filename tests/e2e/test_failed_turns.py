"""A question whose turn failed before any answer is kept, but not asked again."""

from __future__ import annotations

import uuid

import httpx

from tests.fakes.ollama import FakeOllama
from tests.fakes.script import Reply


def test_the_next_turn_does_not_resend_a_failed_question(
    client: httpx.Client, fake_ollama: FakeOllama
) -> None:
    who = f"u-{uuid.uuid4().hex[:10]}"
    first = client.post("/api/chat", json={"message": "hello", "user_id": who})
    assert first.status_code == 200, first.text
    conversation = first.json()["conversation_id"]

    fake_ollama.push(Reply(status=503, error_message="server busy"))
    busy = client.post("/api/chat", json={"message": "What is 2+2? #busy", "user_id": who})
    assert busy.status_code == 503, busy.text

    again = client.post("/api/chat", json={"message": "What is 2+2?", "user_id": who})
    assert again.status_code == 200, again.text
    sent = fake_ollama.chats[-1].json["messages"]
    user_turns = [m["content"] for m in sent if m["role"] == "user"]
    assert user_turns == ["hello", "What is 2+2?"]

    # The failed question is still in the conversation, marked failed.
    stored = client.get(f"/api/conversations/{conversation}", params={"user_id": who}).json()
    assert [(m["role"], m["text"], m["status"]) for m in stored["messages"]] == [
        ("user", "hello", "complete"),
        ("assistant", "echo: hello", "complete"),
        ("user", "What is 2+2? #busy", "failed"),
        ("user", "What is 2+2?", "complete"),
        ("assistant", "echo: What is 2+2?", "complete"),
    ]
