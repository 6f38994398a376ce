"""Bearer tokens over the real stack: per-user tokens and the shared IOS_APITOKEN."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.queue_helpers import HANG, LiveStream, ReplyBook, chat_body, label
from tests.e2e.stack import Stack, launch
from tests.fakes.ollama import FakeOllama
from tests.gateway_http import gateway_client

ALICE, BOB, DAVE, SHARED = "tok-alice-123", "tok-bob-456", "tok-dave-789", "shared-ios-789"


def users_file(*, dave: bool = True) -> str:
    bob_digest = hashlib.sha256(BOB.encode()).hexdigest()
    return f"alice: {ALICE}\nbob: 'sha256:{bob_digest}'\n" + (f"dave: {DAVE}\n" if dave else "")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, fake_ollama: FakeOllama) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("auth")
    tokens = workdir / "tokens.yaml"
    tokens.write_text(users_file())
    config = {
        "api": {"provider": "ollama"},
        "ollama": {"url": fake_ollama.url},
        "auth": {"tokens_file": str(tokens)},
    }
    s = launch(workdir, config, env={"IOS_APITOKEN": SHARED})
    yield s
    s.stop()


@pytest.fixture
def http(stack: Stack) -> Iterator[httpx.Client]:
    with gateway_client(stack.url, timeout=20) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_missing_or_wrong_token_is_401(http: httpx.Client) -> None:
    for headers in ({}, bearer("nope"), {"Authorization": "Basic abc"}):
        r = http.post("/api/chat", json={"message": "hi"}, headers=headers)
        assert r.status_code == 401, r.text
        assert r.json()["code"] == "unauthenticated"
        assert http.get("/api/status", headers=headers).status_code == 401
        assert http.get("/api/conversations", headers=headers).status_code == 401


def test_health_needs_no_token(http: httpx.Client) -> None:
    assert http.get("/health").status_code == 200


def test_user_token_acts_as_its_user_only(http: httpx.Client) -> None:
    r = http.post("/api/chat", json={"message": "I am alice"}, headers=bearer(ALICE))
    assert r.status_code == 200, r.text
    assert http.get("/api/status", headers=bearer(ALICE)).json()["user_id"] == "alice"
    same = http.post("/api/chat", json={"message": "hi", "user_id": "alice"}, headers=bearer(ALICE))
    assert same.status_code == 200
    other = http.post("/api/chat", json={"message": "hi", "user_id": "bob"}, headers=bearer(ALICE))
    assert other.status_code == 403
    assert other.json()["code"] == "permission_denied"
    # A hashed token in the file works the same way.
    assert http.get("/api/status", headers=bearer(BOB)).json()["user_id"] == "bob"
    # Bob does not see Alice's conversations.
    conv = r.json()["conversation_id"]
    assert http.get(f"/api/conversations/{conv}", headers=bearer(BOB)).status_code == 404


def test_shared_token_lets_the_app_name_the_user(http: httpx.Client) -> None:
    r = http.post("/api/chat", json={"message": "hi", "user_id": "carol"}, headers=bearer(SHARED))
    assert r.status_code == 200, r.text
    status = http.get("/api/status", params={"user_id": "carol"}, headers=bearer(SHARED)).json()
    assert status["user_id"] == "carol"
    default = http.get("/api/status", headers=bearer(SHARED)).json()
    assert default["user_id"] == "default"
    bad = http.post(
        "/api/chat", json={"message": "hi", "user_id": "../etc"}, headers=bearer(SHARED)
    )
    # The gateway checks the service's user_id rule itself (it is in the OpenAPI schema): 422.
    assert bad.status_code == 422 and "user_id" in bad.json()["detail"]


def test_a_revoked_users_waiting_stream_ends_unauthenticated(
    stack: Stack, http: httpx.Client, fake_ollama: FakeOllama
) -> None:
    echo = fake_ollama.responder
    book = ReplyBook(fake_ollama)
    holders: list[LiveStream] = []
    try:
        for _ in range(stack.ollama_slots):  # every slot held, so dave's request waits
            text = book.set(label("hold"), HANG)
            holder = LiveStream(stack.url, chat_body("holder", text), headers=bearer(SHARED))
            holder.wait_event("start")
            book.wait_received(text)
            holders.append(holder)
        question = label("dave")
        waiting = LiveStream(stack.url, chat_body("dave", question), headers=bearer(DAVE))
        waiting.wait_event("queued")

        (stack.workdir / "tokens.yaml").write_text(users_file(dave=False))  # revoked

        ended = waiting.ended_with()  # the service notices the file within a second or two
        assert ended.event == "error" and ended.data["code"] == "unauthenticated", ended
        assert "revoked" in ended.data["message"]
        assert book.request_for(question) is None  # it never reached the model
        refused = http.post("/api/chat", json={"message": "hi"}, headers=bearer(DAVE))
        assert refused.status_code == 401
    finally:
        for holder in holders:  # their turns were never revoked: cancelled by their owner
            http.post(
                "/api/queue/cancel",
                json={"request_id": holder.request_id, "user_id": "holder"},
                headers=bearer(SHARED),
            )
            holder.join()
        fake_ollama.responder = echo
