"""A client that goes away cancels its request in every phase, over real sockets.

Queued (the model never sees it), waiting for the first token, mid-stream,
and on the non-streaming `/api/chat`. Where the model already has the
request, the fake must see the upstream connection close within 250 ms of
the client closing its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.queue_helpers import (
    DISCONNECT_BOUND_S,
    HANG,
    LiveStream,
    ReplyBook,
    SlotHolder,
    chat_body,
    conversation_messages,
    label,
    open_raw_chat,
    queue_stack,
    start_queued,
    user,
    wait_state,
    wait_until,
)
from tests.e2e.stack import SseEvent, Stack
from tests.fakes.ollama import FakeOllama
from tests.fakes.script import Reply
from tests.fakes.server import RecordedRequest


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, fake_ollama: FakeOllama, book: ReplyBook
) -> Iterator[Stack]:
    stack = queue_stack(tmp_path_factory.mktemp("disconnects"), fake_ollama, ollama={"parallel": 1})
    yield stack
    stack.stop()


def assert_upstream_closed_soon(upstream: RecordedRequest, client_closed_at: float) -> None:
    assert upstream.settled.wait(5), "the service never closed the upstream request"
    assert upstream.disconnected_at is not None, "the upstream request finished instead"
    delay = upstream.disconnected_at - client_closed_at
    assert delay < DISCONNECT_BOUND_S, f"upstream closed {delay * 1000:.0f} ms after the client"


def test_disconnect_while_queued(stack: Stack, book: ReplyBook, client: httpx.Client) -> None:
    holder = SlotHolder(stack, book, client)
    text = label("queued-then-gone")

    def on_queued(e: SseEvent) -> bool:
        return e.event == "queued"

    gone = LiveStream(stack.url, chat_body(user(), text), close_when=on_queued)
    gone.join()
    assert gone.closed_at is not None and [e.event for e in gone.events] == ["queued"]
    wait_state(client, gone.request_id, gone.user_id, "cancelled")
    # It left the queue: a request sent now is first in line.
    after = start_queued(stack, chat_body(user(), label("next-in-line")))
    assert after.positions()[0] == 0

    holder.release()
    assert after.ended_with().event == "done"
    assert text not in book.received()


def test_disconnect_while_waiting_for_the_first_token(
    stack: Stack, book: ReplyBook, client: httpx.Client
) -> None:
    text = book.set(label("slow-start"), Reply.text("late", initial_delay_s=30))

    def started_upstream(e: SseEvent) -> bool:
        # Close once the model has the request and is yet to answer.
        return e.event == "start" and book.wait_received(text) is not None

    stream = LiveStream(stack.url, chat_body(user(), text), close_when=started_upstream)
    upstream = book.wait_received(text)
    stream.join()
    assert stream.closed_at is not None and [e.event for e in stream.events] == ["start"]
    assert_upstream_closed_soon(upstream, stream.closed_at)
    wait_state(client, stream.request_id, stream.user_id, "cancelled")


def test_disconnect_mid_stream(stack: Stack, book: ReplyBook, client: httpx.Client) -> None:
    text = book.set(label("mid-stream"), Reply.text("first", " second", hang_after=1))
    stream = LiveStream(
        stack.url, chat_body(user(), text), close_when=lambda e: e.event == "message"
    )
    stream.join()
    assert stream.closed_at is not None
    upstream = book.request_for(text)
    assert upstream is not None
    assert_upstream_closed_soon(upstream, stream.closed_at)
    wait_state(client, stream.request_id, stream.user_id, "cancelled")

    # What the user saw before leaving is stored, marked cancelled.
    conversation_id = stream.events[0].data["conversation_id"]

    def stored() -> list[dict[str, Any]]:
        return conversation_messages(client, conversation_id, stream.user_id)

    wait_until(lambda: len(stored()) == 2, "the interrupted turn to be stored")
    question, answer = stored()
    assert question["text"] == text
    assert answer["text"] == "first" and answer["status"] == "cancelled"


def test_disconnect_during_non_streaming_chat(
    stack: Stack, book: ReplyBook, client: httpx.Client
) -> None:
    owner = user()
    text = book.set(label("plain-chat"), HANG)
    body = chat_body(owner, text)
    sock = open_raw_chat(stack, body)
    try:
        upstream = book.wait_received(text)
    finally:
        sock.close()
    closed_at = time.monotonic()
    assert_upstream_closed_soon(upstream, closed_at)

    wait_state(client, body["request_id"], owner, "cancelled")
