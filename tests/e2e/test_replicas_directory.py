"""The request directory across replicas: lists, look-ups and watches from any replica.

Three replicas share one queue in PostgreSQL; users sign in with their own
tokens (one of them an admin). A request accepted by one replica is listed,
looked up and watched through the others, for its owner or an admin only.
Needs ``AGENT_TEST_POSTGRES_URL``; the stack lives in a schema of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from agent.v1 import agent_pb2 as pb

from tests.e2e.queue_helpers import HANG, ReplyBook, label
from tests.e2e.replicas import POSTGRES_URL, Replica, Replicas, replicas_config
from tests.fakes.ollama import FakeOllama
from tests.fakes.script import Reply

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not POSTGRES_URL, reason="AGENT_TEST_POSTGRES_URL is not set"),
    pytest.mark.timeout(120),
]

TOKENS = {"alice": "tok-alice", "bob": "tok-bob", "root": "tok-root"}


def _as(who: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {TOKENS[who]}"),)


@pytest.fixture
def stack(tmp_path: Path, fake_ollama: FakeOllama, fake_ollama_b: FakeOllama) -> Iterator[Replicas]:
    users = tmp_path / "users.yaml"
    users.write_text("alice: tok-alice\nbob: tok-bob\nroot: {token: tok-root, admin: true}\n")
    users.chmod(0o600)
    config = replicas_config(fake_ollama, fake_ollama_b, auth={"tokens_file": str(users)})
    replicas = Replicas(tmp_path / "stack", config)
    replicas.start()
    try:
        yield replicas
    finally:
        replicas.stop()


def _open(replica: Replica, who: str, text: str, request_id: str) -> pb.ChatStreamResponse:
    """A continue-policy stream on ``replica``; returns its first event, then lets go."""
    with replica.channel() as channel:
        call = replica.stub(channel).ChatStream(
            pb.ChatStreamRequest(
                message=text,
                new_conversation=True,
                request_id=request_id,
                on_disconnect=pb.DISCONNECT_POLICY_CONTINUE,
            ),
            timeout=30,
            metadata=_as(who),
        )
        first: pb.ChatStreamResponse = next(iter(call))
        call.cancel()
    return first


def _list(replica: Replica, who: str) -> pb.ListRequestsResponse:
    with replica.channel() as channel:
        answer: pb.ListRequestsResponse = replica.stub(channel).ListRequests(
            pb.ListRequestsRequest(), timeout=10, metadata=_as(who)
        )
    return answer


def test_lists_look_ups_and_watches_answer_from_any_replica_for_the_owner_or_an_admin(
    stack: Replicas, fake_ollama: FakeOllama, fake_ollama_b: FakeOllama
) -> None:
    book = ReplyBook(fake_ollama, fake_ollama_b)
    r0, r1, r2 = stack.replicas
    # Bob's two requests hold both slots (one per host), through replica 0.
    for i in range(2):
        _open(r0, "bob", book.set(label(f"hold{i}"), HANG), f"hold-{i}")
    # Alice's request, accepted by replica 0, runs there once a slot frees; its answer
    # waits on a gate after its first chunk.
    gate = threading.Event()
    text = book.set(label("watched"), Reply(chunks=("alpha", " beta"), gate=gate, gate_after=1))
    first = _open(r0, "alice", text, "watched")
    assert first.WhichOneof("event") == "queued"

    # Listed through replica 1 for alice (hers only), through replica 2 for the admin (all).
    mine = _list(r1, "alice")
    assert not mine.all_users
    assert [(s.request_id, s.user_id) for s in mine.requests] == [("watched", "alice")]
    everyone = _list(r2, "root")
    assert everyone.all_users
    assert {(s.request_id, s.user_id) for s in everyone.requests} == {
        ("hold-0", "bob"),
        ("hold-1", "bob"),
        ("watched", "alice"),
    }
    # Bob's own list from replica 1 has only his; alice's request is not his to see.
    assert {s.request_id for s in _list(r1, "bob").requests} == {"hold-0", "hold-1"}
    with r2.channel() as channel, pytest.raises(grpc.RpcError) as hidden:
        r2.stub(channel).GetQueueStatus(
            pb.GetQueueStatusRequest(request_id="watched"), timeout=10, metadata=_as("bob")
        )
    assert hidden.value.code() == grpc.StatusCode.NOT_FOUND

    # Free a slot (the admin cancels one of bob's from replica 1): alice's starts on
    # replica 0, and her watch through replica 2 is forwarded there and streams it.
    with r1.channel() as channel:
        cancelled = r1.stub(channel).CancelRequest(
            pb.CancelRequestRequest(request_id="hold-0"),
            timeout=10,
            metadata=_as("root"),
        )
    assert cancelled.cancelled
    book.wait_received(text)
    with r2.channel() as channel:
        watch = r2.stub(channel).WatchRequest(
            pb.WatchRequestRequest(request_id="watched"), timeout=30, metadata=_as("alice")
        )
        kinds: list[str] = []
        deltas: list[str] = []
        for answer in watch:
            event = answer.event
            kind = event.WhichOneof("event")
            kinds.append(kind)
            if kind == "text_delta":
                deltas.append(event.text_delta.text)
                gate.set()  # the first chunk came through the forward: let the rest go
        # Another user's watch through replica 1 finds nothing.
        with r1.channel() as other, pytest.raises(grpc.RpcError) as refused:
            list(
                r1.stub(other).WatchRequest(
                    pb.WatchRequestRequest(request_id="watched"),
                    timeout=10,
                    metadata=_as("bob"),
                )
            )
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert kinds[-1] == "done", kinds
    assert "".join(deltas) == "alpha beta"
    with r1.channel() as channel:
        owner = r1.stub(channel).GetQueueStatus(
            pb.GetQueueStatusRequest(request_id="watched"), timeout=10, metadata=_as("alice")
        )
    assert owner.state == pb.REQUEST_STATE_COMPLETED
    with r0.channel() as channel:
        r0.stub(channel).CancelRequest(
            pb.CancelRequestRequest(request_id="hold-1"), timeout=10, metadata=_as("bob")
        )
