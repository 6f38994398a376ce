"""Streams that survive a dropped connection, over real sockets: re-attach and retries.

Requests sent with ``on_disconnect: continue`` keep running when their client
goes away; the client comes back with ``Last-Event-ID`` (REST) or
``WatchRequest(after_seq)`` (gRPC) and gets every later event exactly once,
then one ``done``. A request sent again with the same ``request_id`` attaches
to the first one: the model is asked once.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from agent.v1 import agent_pb2 as pb
from agent.v1 import agent_pb2_grpc

from tests.e2e.queue_helpers import (
    DISCONNECT_BOUND_S,
    WAIT_S,
    LiveStream,
    ReplyBook,
    chat_body,
    conversation_messages,
    label,
    open_raw_chat,
    queue_stack,
    user,
    wait_state,
)
from tests.e2e.stack import Stack, stream_events
from tests.fakes.ollama import FakeOllama
from tests.fakes.script import Reply
from tests.fakes.server import RecordedRequest
from tests.gateway_http import gateway_client

CHUNKS = ("one", " two", " three", " four")
ANSWER = "".join(CHUNKS)


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, fake_ollama: FakeOllama, book: ReplyBook
) -> Iterator[Stack]:
    stack = queue_stack(tmp_path_factory.mktemp("resume"), fake_ollama, ollama={"parallel": 2})
    yield stack
    stack.stop()


def held_reply(book: ReplyBook, tag: str) -> tuple[str, threading.Event]:
    """A message whose answer stops after two chunks until the returned event is set."""
    hold = threading.Event()
    text = book.set(label(tag), Reply.text(*CHUNKS, gate_after=2, gate=hold))
    return text, hold


def assert_still_open(upstream: RecordedRequest) -> None:
    # With `cancel` the upstream closes within DISCONNECT_BOUND_S; three times that, still open.
    assert not upstream.settled.wait(3 * DISCONNECT_BOUND_S), "the upstream request ended"


def assert_completed(upstream: RecordedRequest) -> None:
    assert upstream.settled.wait(WAIT_S), "the upstream request never finished"
    assert upstream.disconnected_at is None, "the service closed the upstream request"


def assert_stored_once(client: httpx.Client, conversation_id: str, owner: str, text: str) -> None:
    stored = conversation_messages(client, conversation_id, owner)
    assert [(m["role"], m["text"], m["status"]) for m in stored] == [
        ("user", text, "complete"),
        ("assistant", ANSWER, "complete"),
    ]


def test_continue_survives_a_hangup_and_reattach_resumes_after_last_event_id(
    stack: Stack, book: ReplyBook, client: httpx.Client
) -> None:
    text, hold = held_reply(book, "resume")
    owner = user()
    texts = itertools.count(1)
    first = LiveStream(
        stack.url,
        chat_body(owner, text, on_disconnect="continue"),
        close_when=lambda e: e.event == "message" and next(texts) == 2,
    )
    first.join()
    assert [(e.id, e.event) for e in first.events] == [(1, "start"), (2, "message"), (3, "message")]
    upstream = book.wait_received(text)
    assert_still_open(upstream)
    wait_state(client, first.request_id, owner, "running")

    again = LiveStream.watch(stack.url, first.request_id, owner, last_event_id=3)
    assert again.wait_headers() == 200
    hold.set()  # the rest of the answer arrives while the client follows live
    done = again.ended_with()
    assert [(e.id, e.event) for e in again.events] == [(4, "message"), (5, "message"), (6, "done")]
    assert [e.data["text"] for e in again.events[:2]] == [" three", " four"]
    assert done.data["response"] == ANSWER and done.data["request_id"] == first.request_id
    assert_completed(upstream)
    assert book.received().count(text) == 1
    assert_stored_once(client, done.data["conversation_id"], owner, text)


def test_reattach_after_the_request_finished(
    stack: Stack, book: ReplyBook, client: httpx.Client
) -> None:
    owner = user()
    body = chat_body(owner, book.set(label("finished"), Reply.text(*CHUNKS)))
    original = stream_events(client, "/api/chat/stream", body)
    assert original[-1].event == "done"
    last_text = max(e.id or 0 for e in original if e.event == "message")

    later = LiveStream.watch(stack.url, body["request_id"], owner, last_event_id=last_text)
    assert [(e.id, e.event) for e in later.join()] == [(original[-1].id, "done")]
    assert later.events[0].data == original[-1].data
    assert later.events[0].data["response"] == ANSWER

    # From the start (no Last-Event-ID): the same events, one done.
    replay = LiveStream.watch(stack.url, body["request_id"], owner)
    replay.ended_with()
    assert replay.events == original


def test_reattach_by_another_user_or_to_an_unknown_id_is_404(
    stack: Stack, book: ReplyBook, client: httpx.Client
) -> None:
    owner = user()
    body = chat_body(owner, book.set(label("mine"), Reply.text("mine")))
    assert stream_events(client, "/api/chat/stream", body)[-1].event == "done"
    for request_id, user_id in ((body["request_id"], user("other")), ("never-sent", owner)):
        r = client.get(f"/api/requests/{request_id}/events", params={"user_id": user_id})
        assert r.status_code == 404, r.text
        assert r.json()["code"] == "not_found"


def test_a_bad_last_event_id_is_a_400(stack: Stack, client: httpx.Client) -> None:
    r = client.get(
        "/api/requests/some-id/events", params={"user_id": user()}, headers={"Last-Event-ID": "x"}
    )
    assert r.status_code == 400 and r.json()["code"] == "invalid_argument", r.text
    assert "Last-Event-ID" in r.json()["detail"]


def test_a_streamed_retry_with_the_same_id_attaches_instead_of_asking_again(
    stack: Stack, book: ReplyBook, client: httpx.Client
) -> None:
    owner = user()
    body = chat_body(owner, book.set(label("retry-stream"), Reply.text(*CHUNKS)))
    first = stream_events(client, "/api/chat/stream", body)
    retried = stream_events(client, "/api/chat/stream", body)
    assert retried == first and first[-1].data["response"] == ANSWER
    plain = client.post("/api/chat", json=body)
    assert plain.status_code == 200 and plain.json() == first[-1].data
    assert book.received().count(body["message"]) == 1

    r = client.post("/api/chat", json={**body, "message": "something else"})
    assert r.status_code == 409 and r.json()["code"] == "already_exists", r.text
    assert "different message" in r.json()["detail"]


def test_a_non_streamed_chat_retried_after_its_connection_dropped_gets_the_same_answer(
    stack: Stack, book: ReplyBook, client: httpx.Client
) -> None:
    text, hold = held_reply(book, "plain-retry")
    owner = user()
    body = chat_body(owner, text, on_disconnect="continue")
    sock = open_raw_chat(stack, body)
    try:
        upstream = book.wait_received(text)
    finally:
        sock.close()
    assert_still_open(upstream)

    answers: list[httpx.Response] = []

    def retry() -> None:
        with gateway_client(stack.url, timeout=WAIT_S) as c:
            answers.append(c.post("/api/chat", json=body))

    retrying = threading.Thread(target=retry)
    retrying.start()
    hold.set()
    retrying.join(WAIT_S)
    assert answers and answers[0].status_code == 200, answers
    answer = answers[0].json()
    assert answer["response"] == ANSWER and answer["request_id"] == body["request_id"]
    assert_completed(upstream)
    assert book.received().count(text) == 1
    assert_stored_once(client, answer["conversation_id"], owner, text)


# --- gRPC ---------------------------------------------------------------------------


@pytest.fixture
def stub(stack: Stack) -> Iterator[Any]:
    with grpc.insecure_channel(stack.grpc_address) as channel:
        yield agent_pb2_grpc.AgentServiceStub(channel)  # type: ignore[no-untyped-call]


def test_grpc_watch_request_resumes_after_seq(
    stack: Stack, book: ReplyBook, client: httpx.Client, stub: Any
) -> None:
    text, hold = held_reply(book, "grpc-resume")
    owner = user()
    request = pb.ChatStreamRequest(
        message=text,
        user_id=owner,
        new_conversation=True,
        request_id=label("grpc"),
        on_disconnect=pb.DISCONNECT_POLICY_CONTINUE,
    )
    call = stub.ChatStream(request, timeout=WAIT_S)
    seen = [next(call) for _ in range(3)]
    call.cancel()
    assert [(m.seq, m.WhichOneof("event")) for m in seen] == [
        (1, "start"),
        (2, "text_delta"),
        (3, "text_delta"),
    ]
    upstream = book.wait_received(text)
    assert_still_open(upstream)

    watch = stub.WatchRequest(
        pb.WatchRequestRequest(request_id=request.request_id, after_seq=3, user_id=owner),
        timeout=WAIT_S,
    )
    assert ("agent-watch", "attached") in tuple(watch.initial_metadata())
    hold.set()
    rest = [m.event for m in watch]
    assert [(m.seq, m.WhichOneof("event")) for m in rest] == [
        (4, "text_delta"),
        (5, "text_delta"),
        (6, "done"),
    ]
    assert rest[-1].done.response == ANSWER
    assert_completed(upstream)
    assert book.received().count(text) == 1
    assert_stored_once(client, rest[-1].done.conversation_id, owner, text)

    for request_id, user_id in ((request.request_id, user("other")), ("never-sent", owner)):
        with pytest.raises(grpc.RpcError) as failed:
            list(stub.WatchRequest(pb.WatchRequestRequest(request_id=request_id, user_id=user_id)))
        assert failed.value.code() is grpc.StatusCode.NOT_FOUND


def test_a_request_refused_before_it_was_accepted_does_not_take_its_id(
    stack: Stack, book: ReplyBook, client: httpx.Client
) -> None:
    owner = user()
    body = chat_body(owner, label("refused"), conversation_id="no-such-conversation")
    body.pop("new_conversation")
    refused = client.post("/api/chat", json=body)
    assert refused.status_code == 404, refused.text
    fixed = {**body, "message": label("accepted"), "new_conversation": True}
    fixed.pop("conversation_id")
    accepted = client.post("/api/chat", json=fixed)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["request_id"] == body["request_id"]
