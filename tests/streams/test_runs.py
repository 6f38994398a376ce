"""The turn run and its registry, in-process: numbering, following, bounds, expiry."""

from __future__ import annotations

import asyncio

import pytest

from service.content import Usage
from service.errors import AgentError, Code, RequestCancelled
from service.events import Started, TurnResult
from service.providers.base import TextDelta
from service.streams import RunRegistry, TurnRun, event_size


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def registry(
    clock: Clock | None = None, *, window: float = 10.0, events: int = 100, max_bytes: int = 10**6
) -> RunRegistry:
    return RunRegistry(
        resume_window_s=window, buffer_events=events, max_bytes=max_bytes, clock=clock or Clock()
    )


def result(text: str, request_id: str = "r1") -> TurnResult:
    return TurnResult(text, "c1", request_id, Usage(1, 2), "ollama", "m", "end_turn")


async def collect(run: TurnRun, after: int) -> list[tuple[int, object]]:
    return [item async for item in run.follow(after)]


async def test_events_are_numbered_from_one_and_done_is_numbered_too() -> None:
    run = registry().open("alice", "r1", "hi", "continue")
    assert run.publish(Started("r1", "c1", "ollama", "m")) == 1
    assert run.publish(TextDelta("a")) == 2
    assert run.finish(result("a")) == 3
    items = await collect(run, 0)
    assert [seq for seq, _ in items] == [1, 2, 3]
    assert items[-1][1] == result("a")


async def test_follow_replays_after_the_given_seq_then_follows_live() -> None:
    run = registry().open("alice", "r1", "hi", "continue")
    for text in ("a", "b", "c"):
        run.publish(TextDelta(text))
    got: list[tuple[int, object]] = []
    saw_replay = asyncio.Event()

    async def follower() -> None:
        async for item in run.follow(2):
            got.append(item)
            saw_replay.set()

    task = asyncio.create_task(follower())
    await saw_replay.wait()
    assert got == [(3, TextDelta("c"))]
    run.publish(TextDelta("d"))
    run.finish(result("abcd"))
    await task
    assert got == [(3, TextDelta("c")), (4, TextDelta("d")), (5, result("abcd"))]


async def test_a_follower_that_saw_done_gets_it_once_more() -> None:
    run = registry().open("alice", "r1", "hi", "continue")
    run.publish(TextDelta("a"))
    run.finish(result("a"))
    assert await collect(run, 2) == [(2, result("a"))]
    assert await collect(run, 99) == [(2, result("a"))]


async def test_an_error_ends_every_follower_after_its_events() -> None:
    run = registry().open("alice", "r1", "hi", "continue")
    run.publish(TextDelta("a"))
    seen: list[tuple[int, object]] = []

    async def follower() -> None:
        async for item in run.follow(0):
            seen.append(item)

    tasks = [asyncio.create_task(follower()) for _ in range(2)]
    await asyncio.sleep(0)  # both are waiting for more now
    run.fail(RequestCancelled("gone"))
    for task in tasks:
        with pytest.raises(AgentError) as raised:
            await task
        assert raised.value.code is Code.CANCELLED
    assert seen == [(1, TextDelta("a")), (1, TextDelta("a"))]


async def test_a_cancelled_follower_does_not_disturb_the_others() -> None:
    run = registry().open("alice", "r1", "hi", "continue")
    gone = asyncio.create_task(collect(run, 0))
    staying = asyncio.create_task(collect(run, 0))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.sleep(0)
    run.finish(result("x"))
    assert await staying == [(1, result("x"))]
    assert gone.cancelled()


async def test_the_buffer_keeps_the_newest_events_only() -> None:
    run = registry(events=3).open("alice", "r1", "hi", "continue")
    for i in range(5):
        run.publish(TextDelta(str(i)))
    assert (len(run), run.first_seq, run.last_seq) == (3, 3, 5)
    run.finish(result("01234"))
    # A follower further behind than the buffer sees a gap, then the rest and done.
    assert [seq for seq, _ in await collect(run, 0)] == [4, 5, 6]


def _three_runs(runs: RunRegistry, clock: Clock) -> tuple[TurnRun, TurnRun, TurnRun]:
    """Two finished runs (``old`` ended first) and a running one, 1,000 characters each."""
    old, newer, live = (runs.open("alice", rid, "m", "continue") for rid in ("old", "new", "live"))
    old.publish(TextDelta("x" * 1000))
    old.finish(result("x"))
    clock.now += 1
    newer.publish(TextDelta("x" * 1000))
    newer.finish(result("x"))
    live.publish(TextDelta("x" * 1000))
    return old, newer, live


def test_the_byte_cap_evicts_the_oldest_finished_runs_first() -> None:
    probe = registry()
    _three_runs(probe, Clock())
    cap = probe.total_bytes + event_size(TextDelta("x" * 1000)) // 2  # one more event is too many
    clock = Clock()
    runs = registry(clock, max_bytes=cap)
    old, newer, live = _three_runs(runs, clock)
    assert runs.get("alice", "old") is old
    live.publish(TextDelta("x" * 1000))  # over the cap: the run that ended first goes
    assert runs.get("alice", "old") is None
    assert runs.get("alice", "new") is newer and runs.get("alice", "live") is live
    assert live.first_seq == 1  # a running request keeps its events while ended runs remain
    assert runs.total_bytes <= cap


def test_past_the_cap_with_only_running_requests_their_oldest_events_go() -> None:
    size = event_size(TextDelta("x" * 1000))
    runs = registry(max_bytes=3 * size)
    run = runs.open("alice", "r1", "m", "continue")
    for _ in range(10):
        run.publish(TextDelta("x" * 1000))
    assert runs.total_bytes <= 3 * size
    assert run.last_seq == 10 and run.first_seq > 1 and len(run) >= 1
    assert runs.get("alice", "r1") is run


def test_a_finished_run_expires_after_the_resume_window() -> None:
    clock = Clock()
    runs = registry(clock, window=5.0)
    run = runs.open("alice", "r1", "m", "continue")
    clock.now += 100  # running requests never expire
    assert runs.get("alice", "r1") is run
    run.finish(result("x"))
    clock.now += 4.9
    assert runs.get("alice", "r1") is run
    clock.now += 0.1
    assert runs.get("alice", "r1") is None
    assert len(runs) == 0 and runs.total_bytes == 0


def test_runs_live_in_their_users_namespace() -> None:
    runs = registry()
    mine = runs.open("alice", "r1", "m", "continue")
    assert runs.get("bob", "r1") is None
    theirs = runs.open("bob", "r1", "other", "cancel")
    assert runs.get("alice", "r1") is mine and runs.get("bob", "r1") is theirs


def test_forgetting_a_run_frees_its_bytes_and_its_id() -> None:
    runs = registry()
    run = runs.open("alice", "r1", "m", "cancel")
    run.fail(AgentError("refused", code=Code.RESOURCE_EXHAUSTED))
    runs.forget(run)
    assert runs.get("alice", "r1") is None and runs.total_bytes == 0
    assert runs.open("alice", "r1", "m", "cancel") is not run
