"""Limits over real sockets: the model's slots under a crowd, and the caps on waiting requests
(over a cap is 429 with Retry-After on both chat endpoints; the per-user cap refuses only that
user)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.e2e.queue_helpers import (
    HANG,
    LiveStream,
    ReplyBook,
    SlotHolder,
    cancel,
    chat_body,
    label,
    queue_stack,
    queue_status,
    start_queued,
    user,
    wait_until,
)
from tests.e2e.stack import Stack
from tests.fakes.ollama import FakeOllama
from tests.gateway_http import gateway_client

MAX_PENDING, MAX_PENDING_PER_USER = 3, 2


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, pool_hosts: tuple[FakeOllama, ...], book: ReplyBook
) -> Iterator[Stack]:
    # On one host and on a pool of two: the caps count waiting requests of the whole pool.
    stack = queue_stack(
        tmp_path_factory.mktemp("limits"),
        *pool_hosts,
        ollama={"parallel": 1},
        queue={"max_pending": MAX_PENDING, "max_pending_per_user": MAX_PENDING_PER_USER},
    )
    yield stack
    stack.stop()


def assert_refused(stack: Stack, client: httpx.Client, who: str, limit: str) -> None:
    """Both chat endpoints answer 429 with a Retry-After for one more request of ``who``."""
    plain = client.post("/api/chat", json=chat_body(who, label("refused")))
    stream = LiveStream(stack.url, chat_body(who, label("refused")))
    stream.join()
    for status, headers, body in (
        (plain.status_code, plain.headers, plain.json()),
        (stream.status_code, stream.headers, stream.error_body),
    ):
        assert status == 429, body
        assert headers is not None and body is not None
        assert int(headers["retry-after"]) >= 1
        assert body["code"] == "resource_exhausted"
        assert body["retry_after_s"] >= 1
        assert limit in body["detail"]


def test_caps_on_waiting_requests(stack: Stack, book: ReplyBook, client: httpx.Client) -> None:
    holder = SlotHolder(stack, book, client)  # running requests do not count
    eager, other, late = user("eager"), user("other"), user("late")
    waiting = [start_queued(stack, chat_body(eager, label("eager"))) for _ in range(2)]

    # The per-user cap refuses the eager user, and only that user.
    assert_refused(stack, client, eager, "max_pending_per_user")
    waiting.append(start_queued(stack, chat_body(other, label("other"))))

    # Now the queue as a whole is full: everyone is refused.
    assert_refused(stack, client, late, "max_pending=")
    assert_refused(stack, client, other, "max_pending=")

    # A place frees up when a waiting request leaves; the eager user gets in again.
    first = waiting.pop(0)
    assert cancel(client, first.request_id, eager).json()["cancelled"] is True
    waiting.append(start_queued(stack, chat_body(eager, label("eager-again"))))

    holder.release()
    for stream in waiting:
        assert stream.ended_with().event == "done", stream.events
    assert first.ended_with().data["code"] == "cancelled"
    refused = [t for t in book.received() if t.startswith("refused")]
    assert refused == []


def test_turns_waiting_for_their_conversation_are_queue_entries_under_the_caps(
    stack: Stack, book: ReplyBook, client: httpx.Client
) -> None:
    who = user("conv")
    first = book.set(label("conv-hold"), HANG)
    running = LiveStream(stack.url, chat_body(who, first))
    conversation = running.wait_event("start").data["conversation_id"]
    book.wait_received(first)

    # Ten turns on the same conversation at once: they wait behind the running turn,
    # as queue entries, so the per-user cap (2) admits two and refuses the other eight.
    bodies = [
        chat_body(who, label(f"turn{i}"), conversation_id=conversation, new_conversation=False)
        for i in range(10)
    ]
    streams = [LiveStream(stack.url, body) for body in bodies]

    def settled() -> bool:
        return all(
            s.status_code not in (None, 200) or any(e.event == "queued" for e in s.events)
            for s in streams
        )

    wait_until(settled, "every turn to be queued or refused")
    queued = [s for s in streams if s.status_code == 200]
    refused = [s for s in streams if s.status_code != 200]
    assert len(queued) == MAX_PENDING_PER_USER and len(refused) == 8
    for stream in refused:
        stream.join()
        assert stream.status_code == 429 and stream.headers is not None
        assert int(stream.headers["retry-after"]) >= 1
        assert stream.error_body is not None
        assert "max_pending_per_user" in stream.error_body["detail"]

    # They are the scheduler's: counted as waiting, with positions, and cancellable.
    stats = client.get("/api/status", params={"user_id": who}).json()["queue_stats"]
    assert stats["waiting"] == MAX_PENDING_PER_USER
    statuses = [queue_status(client, s.request_id, who).json() for s in queued]
    assert [st["state"] for st in statuses] == ["queued", "queued"]
    assert sorted(st["position"] for st in statuses) == [0, 1]
    assert cancel(client, queued[0].request_id, who).json()["cancelled"] is True
    assert queued[0].ended_with().data["code"] == "cancelled"

    assert cancel(client, running.request_id, who).json()["cancelled"] is True
    assert queued[1].ended_with().event == "done"
    # Only the one turn that was neither refused nor cancelled reached the model.
    reached = [s for s in streams if any(s.body["message"] in t for t in book.received())]
    assert reached == [queued[1]]


@pytest.mark.parametrize("parallel", [1, 2])
def test_the_model_never_sees_more_requests_than_its_slots(tmp_path: Path, parallel: int) -> None:
    with FakeOllama() as fake:
        ReplyBook(fake, chunk_delay_s=0.01)
        stack = queue_stack(tmp_path, fake, ollama={"parallel": parallel})
        try:
            bodies = [chat_body(f"crowd-{i % 10}", label(f"crowd{i}")) for i in range(50)]
            with (
                gateway_client(stack.url, timeout=30, limits=_MANY) as client,
                ThreadPoolExecutor(len(bodies)) as pool,
            ):
                replies = list(pool.map(lambda b: client.post("/api/chat", json=b), bodies))
        finally:
            stack.stop()
    assert [r.status_code for r in replies] == [200] * len(bodies)
    assert [r.json()["response"] for r in replies] == [f"echo: {b['message']}" for b in bodies]
    assert len(fake.chats) == len(bodies)
    # Never more than the slots, and the crowd did fill every slot.
    assert fake.max_in_flight == parallel


_MANY = httpx.Limits(max_connections=100, max_keepalive_connections=100)
