"""Queue positions, as `queued` events and `POST /api/queue/status` report them, count down.

One slot. Five requests wait behind a held slot; then, step by step, a
waiting request is cancelled, the slot frees (a quick request runs and
finishes), a running request is cancelled. After every step both views of
every waiting request must show the new position.
"""

from __future__ import annotations

from collections.abc import Iterator

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
    wait_state,
    wait_until,
)
from tests.e2e.stack import Stack
from tests.fakes.ollama import FakeOllama


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, fake_ollama: FakeOllama, book: ReplyBook
) -> Iterator[Stack]:
    stack = queue_stack(tmp_path_factory.mktemp("positions"), fake_ollama, ollama={"parallel": 1})
    yield stack
    stack.stop()


def expect_positions(client: httpx.Client, expected: dict[str, tuple[LiveStream, int]]) -> None:
    """Wait until status and the latest `queued` event of each stream show its position."""
    for name, (stream, position) in expected.items():

        def shows(stream: LiveStream = stream, position: int = position) -> bool:
            r = queue_status(client, stream.request_id, stream.user_id)
            assert r.status_code == 200, r.text
            body = r.json()
            return body["state"] == "queued" and body["position"] == position

        wait_until(shows, f"status of {name} to show position {position}")
        wait_until(
            lambda stream=stream, position=position: stream.positions()[-1] == position,
            f"a queued event of {name} with position {position} (got {stream.positions()})",
        )


def test_positions_count_down_as_requests_ahead_finish_or_are_cancelled(
    stack: Stack, book: ReplyBook, client: httpx.Client
) -> None:
    tag = label("pos")
    holder = SlotHolder(stack, book, client)
    quick = start_queued(stack, chat_body(user(), f"{tag}-quick"))
    hanging = {}
    for name in ("second", "third", "fourth", "fifth"):
        text = book.set(f"{tag}-{name}", HANG)
        hanging[name] = start_queued(stack, chat_body(user(), text))
    second, third, fourth, fifth = hanging.values()

    # Each saw its place at once: the number of requests ahead of it.
    assert [s.positions()[0] for s in (quick, second, third, fourth, fifth)] == [0, 1, 2, 3, 4]
    expect_positions(
        client,
        {
            "quick": (quick, 0),
            "second": (second, 1),
            "third": (third, 2),
            "fourth": (fourth, 3),
            "fifth": (fifth, 4),
        },
    )
    status = queue_status(client, fifth.request_id, fifth.user_id).json()
    assert status["estimated_wait_s"] >= 0 and status["priority"] == 5
    assert status["provider"] == "ollama"

    # A waiting request ahead is cancelled.
    assert cancel(client, third.request_id, third.user_id).json()["cancelled"] is True
    expect_positions(
        client,
        {"quick": (quick, 0), "second": (second, 1), "fourth": (fourth, 2), "fifth": (fifth, 3)},
    )

    # The slot frees: the quick one runs and finishes, the second one takes the slot.
    holder.release()
    assert quick.ended_with().event == "done"
    wait_state(client, second.request_id, second.user_id, "running")
    expect_positions(client, {"fourth": (fourth, 0), "fifth": (fifth, 1)})

    # A running request ahead is cancelled: the next waiting one moves up into the slot.
    assert cancel(client, second.request_id, second.user_id).json()["cancelled"] is True
    wait_state(client, fourth.request_id, fourth.user_id, "running")
    expect_positions(client, {"fifth": (fifth, 0)})

    assert cancel(client, fourth.request_id, fourth.user_id).json()["cancelled"] is True
    wait_state(client, fifth.request_id, fifth.user_id, "running")
    assert queue_status(client, fifth.request_id, fifth.user_id).json()["position"] == -1
    assert cancel(client, fifth.request_id, fifth.user_id).json()["cancelled"] is True

    for stream in (second, third, fourth, fifth):
        assert stream.ended_with().data["code"] == "cancelled"
    # Rate limiting may merge quick successive moves, but a reported position only ever
    # goes down, and every step above was reported.
    for stream, must_show in ((fourth, [3, 2, 0]), (fifth, [4, 3, 1, 0])):
        shown = stream.positions()
        assert shown == sorted(set(shown), reverse=True), shown
        assert set(must_show) <= set(shown), shown
