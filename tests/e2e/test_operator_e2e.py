"""The operator role over real sockets: who sees which requests in ListRequests
(GET /api/queue), and who may cancel whose."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from agent.v1 import agent_pb2 as pb

from tests.e2e.limits_helpers import Users, grpc_stub
from tests.e2e.queue_helpers import (
    HANG,
    LiveStream,
    ReplyBook,
    chat_body,
    label,
    queue_stack,
)
from tests.e2e.stack import Stack
from tests.fakes.ollama import FakeOllama


@pytest.fixture(scope="module")
def users_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("operator-users") / "users.yaml"


@pytest.fixture(scope="module")
def who(users_file: Path) -> Users:
    return Users.write(users_file, {"alice": {}, "bob": {}, "root": {"admin": True}})


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, fake_ollama: FakeOllama, who: Users, users_file: Path
) -> Iterator[Stack]:
    stack = queue_stack(
        tmp_path_factory.mktemp("operator"),
        fake_ollama,
        ollama={"parallel": 1},
        auth={"tokens_file": str(users_file)},
    )
    yield stack
    stack.stop()


def listing(client: httpx.Client, who: Users, name: str) -> dict:
    r = client.get("/api/queue", headers=who.headers(name))
    assert r.status_code == 200, r.text
    return r.json()


def cancel(client: httpx.Client, who: Users, name: str, request_id: str) -> httpx.Response:
    return client.post(
        "/api/queue/cancel", json={"request_id": request_id}, headers=who.headers(name)
    )


def test_visibility_and_admin_cancel(
    stack: Stack, client: httpx.Client, book: ReplyBook, who: Users
) -> None:
    running = LiveStream(
        stack.url, chat_body("alice", book.set(label("hold"), HANG)), headers=who.headers("alice")
    )
    running.wait_event("start")
    alice_waiting = LiveStream(
        stack.url, chat_body("alice", label("a2")), headers=who.headers("alice")
    )
    alice_waiting.wait_event("queued")
    bob_waiting = LiveStream(stack.url, chat_body("bob", label("b1")), headers=who.headers("bob"))
    bob_waiting.wait_event("queued")

    mine = listing(client, who, "alice")
    assert mine["all_users"] is False
    assert [(r["request_id"], r["state"], r["position"]) for r in mine["requests"]] == [
        (running.request_id, "running", -1),
        (alice_waiting.request_id, "queued", 1),  # bob's turn comes first: users take turns
    ]
    first = mine["requests"][0]
    assert (first["provider"], first["model"], first["user_id"]) == ("ollama", "llama3.2", "alice")
    assert first["enqueued_at"] and first["started_at"]
    assert mine["requests"][1]["started_at"] is None
    bobs = listing(client, who, "bob")
    assert [r["request_id"] for r in bobs["requests"]] == [bob_waiting.request_id]

    everyone = listing(client, who, "root")
    assert everyone["all_users"] is True
    assert [(r["user_id"], r["state"], r["position"]) for r in everyone["requests"]] == [
        ("alice", "running", -1),
        ("bob", "queued", 0),
        ("alice", "queued", 1),
    ]
    channel, stub = grpc_stub(stack.grpc_address)
    with channel:
        reply = stub.ListRequests(
            pb.ListRequestsRequest(), metadata=who.metadata("root"), timeout=10
        )
        assert len(reply.requests) == 3 and reply.all_users
        reply = stub.ListRequests(
            pb.ListRequestsRequest(), metadata=who.metadata("bob"), timeout=10
        )
        assert [r.request_id for r in reply.requests] == [bob_waiting.request_id]

        # A non-admin never learns of another user's request, cancel included.
        refused = cancel(client, who, "bob", alice_waiting.request_id)
        assert refused.status_code == 404 and refused.json()["code"] == "not_found"
        status = client.post(
            "/api/queue/status",
            json={"request_id": alice_waiting.request_id},
            headers=who.headers("bob"),
        )
        assert status.status_code == 404
        with pytest.raises(grpc.RpcError) as grpc_refused:
            stub.CancelRequest(
                pb.CancelRequestRequest(request_id=running.request_id),
                metadata=who.metadata("bob"),
                timeout=10,
            )
        assert grpc_refused.value.code() == grpc.StatusCode.NOT_FOUND

        # The admin cancels alice's waiting request over REST and her running one over gRPC.
        done = cancel(client, who, "root", alice_waiting.request_id)
        assert done.status_code == 200 and done.json()["cancelled"] is True
        assert alice_waiting.ended_with().data["code"] == "cancelled"
        aborted = stub.CancelRequest(
            pb.CancelRequestRequest(request_id=running.request_id),
            metadata=who.metadata("root"),
            timeout=10,
        )
        assert aborted.cancelled
    assert running.ended_with().data["code"] == "cancelled"
    assert bob_waiting.ended_with().event == "done"  # untouched, and served next
    assert listing(client, who, "root")["requests"] == []


def test_status_says_who_is_an_admin(client: httpx.Client, who: Users) -> None:
    """The admin role comes with the admin's own token; a plain user gets no more than theirs."""
    assert listing(client, who, "alice")["all_users"] is False
    status = client.get("/api/status", headers=who.headers("root")).json()
    assert status["caller_admin"] is True
    assert client.get("/api/status", headers=who.headers("alice")).json()["caller_admin"] is False
