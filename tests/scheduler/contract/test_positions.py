"""The contract on positions and estimates: ranks 0..n, the watch of a waiting request, waits.

A position is how many requests the order rule would start before this one;
the estimate assumes every request takes the average service time (10 s
until one is measured here).
"""

from __future__ import annotations

import asyncio

import pytest

from service.scheduler.hosts import Host
from service.scheduler.interface import Position
from tests.scheduler.contract.conftest import Backend, position, state, submit, until

BIG = {"max_pending": 100, "max_pending_per_user": 100}


async def test_positions_count_down_as_requests_ahead_leave(backend: Backend) -> None:
    sched = await backend.make(slots={"ollama": 1}, **BIG)
    await submit(sched, "x", "current")
    for i in range(3):
        await submit(sched, f"u{i}", f"a{i}")
    await submit(sched, "me", "me")
    ids = [("a0", "u0"), ("a1", "u1"), ("a2", "u2"), ("me", "me")]
    assert [await position(sched, rid, user) for rid, user in ids] == [0, 1, 2, 3]
    await sched.finish("current", "x", "completed")
    assert await position(sched, "me", "me") == 2
    await sched.cancel("a2", "u2")
    assert await position(sched, "me", "me") == 1
    assert await position(sched, "a2", "u2") == -1
    await sched.finish("a0", "u0", "failed")
    assert await position(sched, "me", "me") == 0
    await sched.finish("a1", "u1", "completed")
    info = await sched.status("me", "me")
    assert (info.state, info.position, info.estimated_wait_s) == ("running", -1, 0.0)


async def test_the_estimated_wait_follows_the_running_requests_and_the_slots(
    backend: Backend,
) -> None:
    sched = await backend.make(slots={"ollama": 2}, default_service_s=10.0)
    for i in range(2):
        await submit(sched, f"r{i}", f"r{i}")
    backend.clock.advance(4.0)
    for i in range(3):
        await submit(sched, f"w{i}", f"w{i}")
    waits = [(await sched.status(f"w{i}", f"w{i}")).estimated_wait_s for i in range(3)]
    # Each running request has 6 s left of its 10; the third waiter needs one more round.
    assert waits == pytest.approx([6.0, 6.0, 16.0])
    assert (await sched.status("r0", "r0")).estimated_wait_s == 0.0


async def test_the_watch_reports_each_change_with_its_estimate_and_ends_at_the_grant(
    backend: Backend,
) -> None:
    sched = await backend.make(slots={"ollama": 1}, default_service_s=10.0)
    await submit(sched, "x", "current")
    for i in range(3):
        await submit(sched, f"u{i}", f"a{i}")
    me = await submit(sched, "me", "me")
    seen: list[Position] = []

    async def watch() -> None:
        async for update in sched.positions(me, min_interval_s=0.0):
            seen.append(update)

    watcher = asyncio.create_task(watch())
    await until(lambda: len(seen) == 1)
    backend.clock.advance(10.0)
    await sched.finish("current", "x", "completed")
    await until(lambda: len(seen) == 2)
    await sched.cancel("a2", "u2")
    await until(lambda: len(seen) == 3)
    backend.clock.advance(10.0)
    await sched.finish("a0", "u0", "completed")
    await until(lambda: len(seen) == 4)
    await sched.finish("a1", "u1", "completed")
    await asyncio.wait_for(watcher, 10)
    assert [p.ahead for p in seen] == [3, 2, 1, 0]
    # 10 s per request: the rest of the running one plus one per request ahead
    assert [p.estimated_wait_s for p in seen] == pytest.approx([40.0, 30.0, 20.0, 10.0])
    assert await state(sched, "me", "me") == "running"


async def test_the_watch_merges_quick_changes_but_sends_the_latest(backend: Backend) -> None:
    sched = await backend.make(slots={"ollama": 1})
    await submit(sched, "x", "current")
    for i in range(3):
        await submit(sched, f"u{i}", f"a{i}")
    me = await submit(sched, "me", "me")
    seen: list[int] = []

    async def watch() -> None:
        async for update in sched.positions(me, min_interval_s=0.5):
            seen.append(update.ahead)

    watcher = asyncio.create_task(watch())
    await until(lambda: seen == [3])
    await sched.finish("current", "x", "completed")  # 2 ...
    await sched.finish("a0", "u0", "completed")  # ... then 1 within the pause: only 1 is sent
    await until(lambda: len(seen) == 2)
    assert seen == [3, 1]
    await sched.finish("a1", "u1", "completed")
    await sched.finish("a2", "u2", "completed")
    await asyncio.wait_for(watcher, 10)
    assert await state(sched, "me", "me") == "running"


async def test_the_watch_of_a_request_not_waiting_yields_nothing(backend: Backend) -> None:
    sched = await backend.make(slots={"ollama": 1})
    running = await submit(sched, "x", "running")
    assert [u async for u in sched.positions(running, min_interval_s=0.0)] == []
    ended = await submit(sched, "y", "ended")
    await sched.cancel("ended", "y")
    assert [u async for u in sched.positions(ended, min_interval_s=0.0)] == []


async def test_positions_count_only_the_requests_that_compete_for_the_same_hosts(
    backend: Backend,
) -> None:
    hosts = {
        "ollama": [
            Host("http://a", 1, models=frozenset({"m1"})),
            Host("http://b", 1, models=frozenset({"m2"})),
        ]
    }
    sched = await backend.make(slots={}, hosts=hosts, **BIG)
    await submit(sched, "u", "on-a", model="m1")
    await submit(sched, "v", "blocked", model="m1")  # first in line, but only a serves it
    later = await submit(sched, "w", "later", model="m2")
    assert later.granted  # nothing waits while a host that serves it is free
    await submit(sched, "y", "m1-next", model="m1")
    await submit(sched, "z", "m2-next", model="m2")
    assert [await position(sched, r, u) for r, u in [("blocked", "v"), ("m1-next", "y")]] == [
        0,
        1,
    ]
    assert await position(sched, "m2-next", "z") == 0  # the m1 requests ahead never take b


async def test_estimates_count_the_slots_of_the_healthy_hosts_only(backend: Backend) -> None:
    hosts = {"ollama": [Host("http://a", 1), Host("http://b", 1)]}
    sched = await backend.make(slots={}, hosts=hosts, default_service_s=10.0, **BIG)
    await submit(sched, "u", "r0")
    await submit(sched, "v", "r1")
    await submit(sched, "w", "w0")
    await submit(sched, "y", "w1")
    assert (await sched.status("w0", "w")).estimated_wait_s == pytest.approx(10.0)
    backend.clock.advance(4.0)
    waits = [(await sched.status(r, u)).estimated_wait_s for r, u in [("w0", "w"), ("w1", "y")]]
    assert waits == pytest.approx([6.0, 6.0])
    await sched.report_host("ollama", "http://a", up=False, error="refused")
    waits = [(await sched.status(r, u)).estimated_wait_s for r, u in [("w0", "w"), ("w1", "y")]]
    assert waits == pytest.approx([6.0, 16.0])  # one slot left: w1 waits a round more


async def test_positions_do_not_move_with_time_alone(backend: Backend) -> None:
    sched = await backend.make(slots={"ollama": 1}, aging_interval_s=30.0, **BIG)
    await submit(sched, "x", "blocker")
    await submit(sched, "a", "older", priority=2)  # key 30 after its arrival
    backend.clock.advance(20.0)
    await submit(sched, "b", "urgent", priority=1)  # key 20 after the first's arrival
    assert (await position(sched, "urgent", "b"), await position(sched, "older", "a")) == (0, 1)
    backend.clock.advance(1000.0)  # both wait on: their keys, and so their order, stay
    assert (await position(sched, "urgent", "b"), await position(sched, "older", "a")) == (0, 1)
    await submit(sched, "c", "later", priority=1)  # aging: keyed behind both
    assert await position(sched, "later", "c") == 2
    await sched.finish("blocker", "x", "completed")
    assert await state(sched, "urgent", "b") == "running"


async def test_the_watch_reports_an_arrival_keyed_ahead_and_nothing_for_time_alone(
    backend: Backend,
) -> None:
    sched = await backend.make(slots={"ollama": 1}, aging_interval_s=30.0, **BIG)
    await submit(sched, "x", "blocker")
    me = await submit(sched, "a", "me", priority=5)  # key 120 after now
    seen: list[int] = []

    async def watch() -> None:
        async for update in sched.positions(me, min_interval_s=0.0):
            seen.append(update.ahead)

    watcher = asyncio.create_task(watch())
    await until(lambda: seen == [0])
    backend.clock.advance(50.0)
    await submit(sched, "b", "ahead", priority=3)  # key 50 + 60 = 110: ahead of me
    await until(lambda: seen == [0, 1])
    await submit(sched, "c", "behind", priority=5)  # key 170: behind me, no update
    await sched.finish("blocker", "x", "completed")  # "ahead" starts: I am first again
    await until(lambda: seen == [0, 1, 0])
    await sched.cancel("me", "a")
    await asyncio.wait_for(watcher, 10)
    assert seen == [0, 1, 0]
