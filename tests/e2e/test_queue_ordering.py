"""Dispatch order over real sockets: one smoke test that priority orders what reaches Ollama.

One Ollama slot (or a pool of two hosts with one each), held by requests that
hang until they are cancelled, so the requests under test all wait; they are
sent one at a time (each seen waiting before the next goes out), then one slot
is freed and the order in which the fakes received them is the order the
scheduler dispatched them. The ordering rules themselves (users taking turns,
aging) are tested in process, in tests/scheduler/test_order.py and test_queue.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.queue_helpers import (
    ReplyBook,
    SlotHolder,
    chat_body,
    label,
    queue_stack,
    start_queued,
    user,
)
from tests.e2e.stack import Stack
from tests.fakes.ollama import FakeOllama
from tests.gateway_http import gateway_client


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, pool_hosts: tuple[FakeOllama, ...], book: ReplyBook
) -> Iterator[Stack]:
    # Aging effectively off (an hour per level), so only priority and turns decide.
    stack = queue_stack(
        tmp_path_factory.mktemp("ordering"),
        *pool_hosts,
        ollama={"parallel": 1},
        queue={"aging_interval_s": 3600},
    )
    yield stack
    stack.stop()


def dispatch_order(
    stack: Stack, book: ReplyBook, requests: list[tuple[str, str, int]]
) -> list[str]:
    """Queue (user, text, priority) in this order behind a held slot, free it, return the fake's
    order of the texts."""
    with gateway_client(stack.url, timeout=20) as client:
        holder = SlotHolder(stack, book, client)
        streams = [
            start_queued(stack, chat_body(who, text, priority=priority))
            for who, text, priority in requests
        ]
        # One slot at a time (on a pool, the others stay held), so the order in which
        # the fakes receive the requests is the order they were dispatched in.
        holder.release(1)
        for stream in streams:
            assert stream.ended_with().event == "done", stream.events
        holder.release()
    texts = {text for _, text, _ in requests}
    return [t for t in book.received() if t in texts]


def test_lower_priority_number_goes_first(stack: Stack, book: ReplyBook) -> None:
    tag = label("prio")
    one_user = user("both")
    # Submitted in a scrambled order; one user has two requests of different priorities
    # (the user's second place is one aging interval later: its p7 ranks as a p8 would).
    plan = [
        (user(), f"{tag}-p5", 5),
        (user(), f"{tag}-p9", 9),
        (one_user, f"{tag}-p7", 7),
        (user(), f"{tag}-p1", 1),
        (user(), f"{tag}-p3", 3),
        (one_user, f"{tag}-p2", 2),
        (user(), f"{tag}-p10", 10),
    ]
    order = dispatch_order(stack, book, plan)
    assert order == [f"{tag}-p{n}" for n in (1, 2, 3, 5, 7, 9, 10)]
