"""`POST /api/queue/cancel` over real sockets: waiting requests leave at once, running ones
are aborted upstream, only the owner may look or cancel."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.queue_helpers import (
    DISCONNECT_BOUND_S,
    HANG,
    LiveStream,
    ReplyBook,
    SlotHolder,
    cancel,
    chat_body,
    conversation_messages,
    label,
    queue_stack,
    queue_status,
    start_queued,
    user,
    wait_until,
)
from tests.e2e.stack import Stack
from tests.fakes.ollama import FakeOllama
from tests.fakes.script import Reply


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, fake_ollama: FakeOllama, book: ReplyBook
) -> Iterator[Stack]:
    stack = queue_stack(tmp_path_factory.mktemp("cancel"), fake_ollama, ollama={"parallel": 1})
    yield stack
    stack.stop()


def test_cancelled_waiting_request_never_reaches_the_model(
    stack: Stack, book: ReplyBook, client: httpx.Client
) -> None:
    holder = SlotHolder(stack, book, client)
    owner = user()
    waiting = start_queued(stack, chat_body(owner, label("cancel-me")))
    after = start_queued(stack, chat_body(user(), label("after-it")))
    assert after.positions()[0] == 1

    r = cancel(client, waiting.request_id, owner)
    assert r.status_code == 200, r.text
    assert r.json() == {"request_id": waiting.request_id, "state": "cancelled", "cancelled": True}
    end = waiting.ended_with()
    assert end.event == "error" and end.data["code"] == "cancelled"
    assert "start" not in [e.event for e in waiting.events]
    status = queue_status(client, waiting.request_id, owner).json()
    assert status["state"] == "cancelled" and status["position"] == -1
    # Cancelling again reports the state without cancelling anything.
    assert cancel(client, waiting.request_id, owner).json()["cancelled"] is False

    holder.release()
    assert after.ended_with().event == "done"
    assert waiting.body["message"] not in book.received()
    assert after.body["message"] in book.received()


def test_cancelled_running_request_closes_upstream_and_keeps_the_partial_answer(
    stack: Stack, book: ReplyBook, client: httpx.Client
) -> None:
    owner = user()
    text = book.set(label("long-answer"), Reply.text("Partial", " answer", " never", hang_after=2))
    stream = LiveStream(stack.url, chat_body(owner, text))
    start = stream.wait_event("start")
    stream.wait_for(
        lambda e: e.event == "message" and e.data["text"] == " answer", "the second chunk"
    )
    upstream = book.wait_received(text)

    cancelled_at = time.monotonic()
    r = cancel(client, stream.request_id, owner)
    assert r.status_code == 200, r.text
    assert r.json()["cancelled"] is True and r.json()["state"] == "cancelled"
    end = stream.ended_with()
    assert end.event == "error" and end.data["code"] == "cancelled"

    assert upstream.settled.wait(5) and upstream.disconnected_at is not None
    assert upstream.disconnected_at - cancelled_at < DISCONNECT_BOUND_S

    # What the user saw is stored, marked cancelled.
    def stored() -> list[dict]:
        return conversation_messages(client, start.data["conversation_id"], owner)

    wait_until(lambda: len(stored()) == 2, "the cancelled turn to be stored")
    question, answer = stored()
    assert question["role"] == "user" and question["text"] == text
    assert answer["role"] == "assistant" and answer["text"] == "Partial answer"
    assert answer["status"] == "cancelled" and answer["request_id"] == stream.request_id
    assert queue_status(client, stream.request_id, owner).json()["state"] == "cancelled"


def test_another_users_request_is_not_found_for_status_and_cancel(
    stack: Stack, book: ReplyBook, client: httpx.Client
) -> None:
    owner, stranger = user("owner"), user("stranger")
    text = book.set(label("private"), HANG)
    stream = LiveStream(stack.url, chat_body(owner, text))
    stream.wait_event("start")
    book.wait_received(text)

    for call in (queue_status, cancel):
        r = call(client, stream.request_id, stranger)
        assert r.status_code == 404, r.text
        assert r.json()["code"] == "not_found"
        # Same answer as for an id that does not exist: nothing leaks.
        unknown = call(client, "no-such-request", stranger)
        assert unknown.status_code == 404
        assert r.json()["detail"].replace(stream.request_id, "X") == unknown.json()[
            "detail"
        ].replace("no-such-request", "X")

    # The stranger's cancel did nothing: the request still runs for its owner.
    assert queue_status(client, stream.request_id, owner).json()["state"] == "running"
    assert cancel(client, stream.request_id, owner).json()["cancelled"] is True
    assert stream.ended_with().data["code"] == "cancelled"
