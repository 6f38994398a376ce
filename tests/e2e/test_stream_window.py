"""The resume window, over real sockets (a tiny window here): abandoned waits, expired buffers.

A waiting ``continue`` request whose client has been gone for the window is
cancelled and leaves the queue. Once a finished request's buffer expired, a
re-attach or a retry still gets its one terminal event, rebuilt from the store.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import httpx
import pytest
from agent.v1 import agent_pb2 as pb
from agent.v1 import agent_pb2_grpc

from tests.e2e.queue_helpers import (
    LiveStream,
    ReplyBook,
    SlotHolder,
    chat_body,
    label,
    queue_stack,
    start_queued,
    user,
    wait_state,
    wait_until,
)
from tests.e2e.stack import SseEvent, Stack, stream_events
from tests.fakes.ollama import FakeOllama
from tests.fakes.script import Reply

WINDOW_S = 1.0  # short, yet far longer than one re-attach takes
ATTACHED = ("agent-watch", "attached")


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, fake_ollama: FakeOllama, book: ReplyBook
) -> Iterator[Stack]:
    stack = queue_stack(
        tmp_path_factory.mktemp("window"),
        fake_ollama,
        ollama={"parallel": 1},
        stream={"resume_window_s": WINDOW_S},
    )
    yield stack
    stack.stop()


def test_a_waiting_continue_request_whose_client_never_returns_is_cancelled(
    stack: Stack, book: ReplyBook, client: httpx.Client
) -> None:
    holder = SlotHolder(stack, book, client)
    text = label("abandoned")

    def on_queued(e: SseEvent) -> bool:
        return e.event == "queued"

    gone = LiveStream(
        stack.url, chat_body(user(), text, on_disconnect="continue"), close_when=on_queued
    )
    gone.join()
    assert gone.closed_at is not None and [e.event for e in gone.events] == ["queued"]
    wait_state(client, gone.request_id, gone.user_id, "cancelled")
    # It left the queue: a request sent now is first in line.
    after = start_queued(stack, chat_body(user(), label("next-in-line")))
    assert after.positions()[0] == 0

    holder.release()
    assert after.ended_with().event == "done"
    assert text not in book.received()


def test_a_waiting_continue_request_whose_client_comes_back_in_time_stays_queued(
    stack: Stack, book: ReplyBook, client: httpx.Client
) -> None:
    holder = SlotHolder(stack, book, client)
    text = label("back-in-time")
    gone = LiveStream(
        stack.url,
        chat_body(user(), text, on_disconnect="continue"),
        close_when=lambda e: e.event == "queued",
    )
    gone.join()
    back = LiveStream.watch(stack.url, gone.request_id, gone.user_id, last_event_id=1)
    assert back.wait_headers() == 200
    holder.release()
    done = back.ended_with()
    assert done.event == "done" and done.data["response"] == f"echo: {text}"
    assert back.events[0].event in ("queued", "start")  # replayed after the first queued
    assert book.received().count(text) == 1


def test_after_the_buffer_expired_one_done_with_the_stored_answer(
    stack: Stack, book: ReplyBook, client: httpx.Client
) -> None:
    owner = user()
    body = chat_body(owner, book.set(label("expired"), Reply.text("stored", " answer")))
    original = stream_events(client, "/api/chat/stream", body)
    assert original[-1].event == "done"

    def watch() -> list[SseEvent]:
        events = LiveStream.watch(stack.url, body["request_id"], owner, last_event_id=1)
        events.ended_with()
        return events.events

    # The buffer replays every event after id 1; once it expired, the one event is the done
    # rebuilt from the store, numbered after the Last-Event-ID sent.
    assert len(original) > 2
    wait_until(lambda: len(watch()) == 1, "the request's buffer to expire")
    [done] = watch()
    assert (done.event, done.id) == ("done", 2)
    expected = {**original[-1].data, "stop_reason": ""}  # the stop reason is not stored
    assert done.data == expected and done.data["response"] == "stored answer"

    # A retry is answered from the store too; the model was asked once.
    retried = client.post("/api/chat", json=body)
    assert retried.status_code == 200 and retried.json() == expected
    assert book.received().count(body["message"]) == 1
    clash = client.post("/api/chat", json={**body, "message": "another question"})
    assert clash.status_code == 409 and clash.json()["code"] == "already_exists"


def test_after_the_buffer_expired_a_cancelled_request_reports_its_outcome(
    stack: Stack, book: ReplyBook, client: httpx.Client
) -> None:
    holder = SlotHolder(stack, book, client)
    waiting = start_queued(stack, chat_body(holder.user_id, label("cancel-me")))
    first = holder.streams[0]
    holder.release()  # cancels the holder's request: it ended, cancelled
    waiting.ended_with()

    def outcome() -> list[SseEvent]:
        events = LiveStream.watch(stack.url, first.request_id, holder.user_id)
        assert events.wait_headers() == 200
        events.ended_with()
        return events.events

    wait_until(lambda: len(outcome()) == 1, "the request's buffer to expire")
    [error] = outcome()
    assert error.event == "error" and error.data["code"] == "cancelled"

    # Over gRPC the outcome is the status, and its trailers say the request was found: a
    # relay that read the initial metadata only after the call ended gets none from grpc.
    def watch_status(request_id: str) -> grpc.RpcError:
        with grpc.insecure_channel(stack.grpc_address) as channel:
            stub = agent_pb2_grpc.AgentServiceStub(channel)  # type: ignore[no-untyped-call]
            call = stub.WatchRequest(
                pb.WatchRequestRequest(request_id=request_id, user_id=holder.user_id), timeout=10
            )
            with pytest.raises(grpc.RpcError) as ended:
                list(call)
            return ended.value

    found = watch_status(first.request_id)
    assert found.code() is grpc.StatusCode.CANCELLED
    assert ATTACHED in tuple(found.trailing_metadata())
    unknown = watch_status("never-sent")
    assert unknown.code() is grpc.StatusCode.NOT_FOUND
    assert ATTACHED not in tuple(unknown.trailing_metadata())
