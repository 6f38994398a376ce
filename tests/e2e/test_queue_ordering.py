"""Dispatch order over real sockets: priority, users taking turns, aging.

One Ollama slot (or a pool of two hosts with one each), held by requests that
hang until they are cancelled, so the requests under test all wait; they are
sent one at a time (each seen waiting before the next goes out), then one slot
is freed and the order in which the fakes received them is the order the
scheduler dispatched them.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.queue_helpers import (
    ReplyBook,
    SlotHolder,
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

AGING_INTERVAL_S = 0.15


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


@pytest.fixture(scope="module")
def aging_stack(
    tmp_path_factory: pytest.TempPathFactory, pool_hosts: tuple[FakeOllama, ...], book: ReplyBook
) -> Iterator[Stack]:
    stack = queue_stack(
        tmp_path_factory.mktemp("aging"),
        *pool_hosts,
        ollama={"parallel": 1},
        queue={"aging_interval_s": AGING_INTERVAL_S},
    )
    yield stack
    stack.stop()


def dispatch_order(
    stack: Stack, book: ReplyBook, requests: list[tuple[str, str, int]]
) -> list[str]:
    """Queue (user, text, priority) in this order behind a held slot, free it, return the fake's
    order of the texts."""
    with httpx.Client(base_url=stack.url, timeout=20) as client:
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
    # Submitted in a scrambled order; one user has two requests of different priorities.
    plan = [
        (user(), f"{tag}-p5", 5),
        (user(), f"{tag}-p9", 9),
        (one_user, f"{tag}-p8", 8),
        (user(), f"{tag}-p1", 1),
        (user(), f"{tag}-p3", 3),
        (one_user, f"{tag}-p2", 2),
        (user(), f"{tag}-p10", 10),
    ]
    order = dispatch_order(stack, book, plan)
    assert order == [f"{tag}-p{n}" for n in (1, 2, 3, 5, 8, 9, 10)]


def test_users_take_turns_so_a_burst_does_not_hold_back_others(
    stack: Stack, book: ReplyBook
) -> None:
    tag = label("turns")
    burst, second, third = user("burst"), user("second"), user("third")
    plan = [(burst, f"{tag}-a{i}", 5) for i in range(1, 6)]
    plan += [(second, f"{tag}-b1", 5), (third, f"{tag}-c1", 5)]
    order = dispatch_order(stack, book, plan)
    # The others' first requests wait behind at most one request of the burst.
    assert order == [f"{tag}-{n}" for n in ("a1", "b1", "c1", "a2", "a3", "a4", "a5")]


def test_aging_lets_priority_10_run_under_priority_1_load(
    aging_stack: Stack, book: ReplyBook
) -> None:
    tag = label("aging")
    busy, patient = user("busy"), user("patient")
    with httpx.Client(base_url=aging_stack.url, timeout=20) as client:
        holder = SlotHolder(aging_stack, book, client)
        urgent = [
            start_queued(aging_stack, chat_body(busy, f"{tag}-h{i}", priority=1))
            for i in range(1, 4)
        ]
        low = start_queued(aging_stack, chat_body(patient, f"{tag}-low", priority=10))
        assert low.positions()[0] == 3  # behind every priority-1 request at first

        # After nine aging intervals it has reached priority 1 and has waited for a turn
        # longer than the busy user will have once its first request runs.
        def aged() -> bool:
            return queue_status(client, low.request_id, patient).json()["position"] == 1

        wait_until(aged, "the priority-10 request to age to priority 1", timeout=20)
        holder.release(1)
        for stream in [*urgent, low]:
            assert stream.ended_with().event == "done", stream.events
        holder.release()
    order = [t for t in book.received() if t.startswith(tag)]
    # Strict priority (or first come, first served) would put it last.
    assert order == [f"{tag}-h1", f"{tag}-low", f"{tag}-h2", f"{tag}-h3"]
