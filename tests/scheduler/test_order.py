"""Who gets the next slot, and what positions and watchers report while waiting."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from service.scheduler import Scheduler, Ticket


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def the_running(tickets: list[Ticket]) -> Ticket:
    (running,) = [t for t in tickets if t.state == "running"]
    return running


async def until(condition: Callable[[], bool], seconds: float = 2.0) -> None:
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.001)


def big_scheduler(clock: FakeClock, aging_interval_s: float = 30.0) -> Scheduler:
    return Scheduler(
        slots={"ollama": 1},
        max_pending=1000,
        max_pending_per_user=1000,
        aging_interval_s=aging_interval_s,
        clock=clock,
    )


async def test_priority_one_runs_first() -> None:
    sched = big_scheduler(FakeClock())
    current = sched.submit(user_id="x", provider="ollama")
    assert current.state == "running"  # a free slot is taken at once
    waiting = [sched.submit(user_id=f"u{p}", provider="ollama", priority=p) for p in (5, 1, 10, 3)]
    started = []
    for _ in waiting:
        sched.finish(current, "completed")
        current = the_running(waiting)
        started.append(current.priority)
    assert started == [1, 3, 5, 10]


async def test_acquire_returns_in_dispatch_order() -> None:
    sched = Scheduler(slots={"ollama": 1})
    blocker = sched.submit(user_id="x", provider="ollama")
    started: list[int] = []

    async def worker(priority: int) -> None:
        ticket = sched.submit(user_id="u", provider="ollama", priority=priority)
        await sched.acquire(ticket)
        started.append(priority)
        await asyncio.sleep(0)
        sched.finish(ticket, "completed")

    tasks = [asyncio.create_task(worker(p)) for p in (7, 2, 9, 2, 1)]
    await until(lambda: sched.stats().total_waiting == 5)
    sched.finish(blocker, "completed")
    await asyncio.gather(*tasks)
    assert started == [1, 2, 2, 7, 9]


async def test_a_burst_delays_another_users_first_request_by_one_slot_at_most() -> None:
    sched = big_scheduler(FakeClock())
    burst = [sched.submit(user_id="alice", provider="ollama") for _ in range(20)]
    bob = sched.submit(user_id="bob", provider="ollama")
    assert burst[0].state == "running"
    assert sched.position(bob) == 0
    sched.finish(burst[0], "completed")
    assert bob.state == "running"
    # and alice's burst continues after bob's turn
    sched.finish(bob, "completed")
    assert burst[1].state == "running"


async def test_three_users_rotate() -> None:
    sched = big_scheduler(FakeClock())
    tickets = [sched.submit(user_id="alice", provider="ollama") for _ in range(6)]
    tickets += [sched.submit(user_id="bob", provider="ollama") for _ in range(2)]
    tickets += [sched.submit(user_id="carol", provider="ollama")]
    users = []
    current = tickets[0]
    for _ in range(len(tickets) - 1):
        sched.finish(current, "completed")
        current = the_running(tickets)
        users.append(current.user_id)
    assert users == ["bob", "carol", "alice", "bob", "alice", "alice", "alice", "alice"]


async def test_aging_lets_priority_ten_run_under_sustained_priority_one_load() -> None:
    clock = FakeClock()
    sched = big_scheduler(clock, aging_interval_s=30.0)
    current = sched.submit(user_id="busy", provider="ollama", priority=1)
    low = sched.submit(user_id="patient", provider="ollama", priority=10)
    tickets = [current, low]
    ran_after_s = None
    for step in range(1, 100):
        # Two urgent requests arrive for every one served: the queue only grows.
        tickets.append(sched.submit(user_id="busy", provider="ollama", priority=1))
        tickets.append(sched.submit(user_id="busier", provider="ollama", priority=1))
        clock.advance(10.0)
        sched.finish(current, "completed")
        current = the_running(tickets)
        if current is low:
            ran_after_s = step * 10.0
            break
    # Its key is nine intervals (270 s) after its arrival: every request keyed later
    # waits behind it, and the two busy users' spread-out keys pass 270 s within 300 s.
    assert ran_after_s is not None
    assert ran_after_s <= 300.0


async def test_positions_count_down_as_requests_ahead_leave() -> None:
    sched = big_scheduler(FakeClock())
    current = sched.submit(user_id="x", provider="ollama")
    ahead = [sched.submit(user_id=f"u{i}", provider="ollama") for i in range(3)]
    me = sched.submit(user_id="me", provider="ollama")
    assert [sched.position(t) for t in [*ahead, me]] == [0, 1, 2, 3]
    assert sched.status(me.request_id, "me").position == 3

    sched.finish(current, "completed")
    assert sched.position(me) == 2
    sched.cancel(ahead[2].request_id, "u2")
    assert sched.position(me) == 1
    assert sched.position(ahead[2]) == -1
    sched.finish(ahead[0], "failed")
    assert sched.position(me) == 0
    sched.finish(ahead[1], "completed")
    assert sched.position(me) == -1
    assert me.state == "running"


async def test_positions_do_not_move_with_time_alone() -> None:
    clock = FakeClock(0.0)
    sched = big_scheduler(clock, aging_interval_s=30.0)
    sched.submit(user_id="x", provider="ollama")
    older = sched.submit(user_id="a", provider="ollama", priority=2)  # key 30
    clock.advance(20.0)
    urgent = sched.submit(user_id="b", provider="ollama", priority=1)  # key 20
    assert (sched.position(urgent), sched.position(older)) == (0, 1)
    clock.advance(1000.0)  # both wait on: the order is fixed by their keys
    assert (sched.position(urgent), sched.position(older)) == (0, 1)
    later = sched.submit(user_id="c", provider="ollama", priority=1)  # key 1020
    assert sched.position(later) == 2  # aging: it ranks behind both of them


async def test_estimated_wait_grows_with_position() -> None:
    clock = FakeClock()
    sched = Scheduler(slots={"ollama": 2}, clock=clock, default_service_s=10.0)
    running = [sched.submit(user_id=f"r{i}", provider="ollama") for i in range(2)]
    clock.advance(4.0)
    waiting = [sched.submit(user_id=f"w{i}", provider="ollama") for i in range(3)]
    waits = [sched.status(t.request_id, t.user_id).estimated_wait_s for t in waiting]
    assert waits == pytest.approx([6.0, 6.0, 16.0])
    assert sched.status(running[0].request_id, "r0").estimated_wait_s == 0.0


async def test_watch_position_reports_each_change_and_stops_when_running() -> None:
    clock = FakeClock()
    sched = Scheduler(slots={"ollama": 1}, clock=clock, default_service_s=10.0)
    current = sched.submit(user_id="x", provider="ollama")
    ahead = [sched.submit(user_id=f"u{i}", provider="ollama") for i in range(3)]
    me = sched.submit(user_id="me", provider="ollama")
    seen: list[tuple[int, float]] = []

    async def watch() -> None:
        async for update in sched.watch_position(me, min_interval_s=0.0):
            seen.append(update)

    watcher = asyncio.create_task(watch())
    await until(lambda: len(seen) == 1)
    clock.advance(10.0)
    sched.finish(current, "completed")
    await until(lambda: len(seen) == 2)
    sched.cancel(ahead[2].request_id, "u2")
    await until(lambda: len(seen) == 3)
    clock.advance(10.0)
    sched.finish(ahead[0], "completed")
    await until(lambda: len(seen) == 4)
    sched.finish(ahead[1], "completed")
    await asyncio.wait_for(watcher, 2.0)

    assert [p for p, _ in seen] == [3, 2, 1, 0]
    # 10 s per request: the rest of the running one plus one per request ahead
    assert [w for _, w in seen] == pytest.approx([40.0, 30.0, 20.0, 10.0])
    assert me.state == "running"


async def test_watch_position_merges_quick_changes_but_sends_the_latest() -> None:
    sched = Scheduler(slots={"ollama": 1})
    current = sched.submit(user_id="x", provider="ollama")
    ahead = [sched.submit(user_id=f"u{i}", provider="ollama") for i in range(3)]
    me = sched.submit(user_id="me", provider="ollama")
    seen: list[int] = []

    async def watch() -> None:
        async for position, _ in sched.watch_position(me, min_interval_s=0.5):
            seen.append(position)

    watcher = asyncio.create_task(watch())
    await until(lambda: seen == [3])
    sched.finish(current, "completed")
    await asyncio.sleep(0)
    sched.finish(ahead[0], "completed")
    await until(lambda: len(seen) == 2)
    assert seen == [3, 1]
    sched.finish(ahead[1], "completed")
    sched.finish(ahead[2], "completed")
    await asyncio.wait_for(watcher, 2.0)
    assert me.state == "running"


async def test_watch_position_of_a_ticket_not_waiting_yields_nothing() -> None:
    sched = Scheduler(slots={"ollama": 1})
    running = sched.submit(user_id="x", provider="ollama")
    assert [u async for u in sched.watch_position(running)] == []


async def test_watch_position_reports_an_arrival_keyed_ahead() -> None:
    clock = FakeClock(0.0)
    sched = Scheduler(slots={"ollama": 1}, aging_interval_s=30.0, clock=clock)
    blocker = sched.submit(user_id="x", provider="ollama")
    me = sched.submit(user_id="a", provider="ollama", priority=5)  # key 120
    seen: list[int] = []

    async def watch() -> None:
        async for position, _ in sched.watch_position(me, min_interval_s=0.0):
            seen.append(position)

    watcher = asyncio.create_task(watch())
    await until(lambda: seen == [0])
    clock.advance(50.0)
    sched.submit(user_id="b", provider="ollama", priority=3)  # key 110: ahead of me
    await until(lambda: seen == [0, 1])
    sched.submit(user_id="c", provider="ollama", priority=5)  # key 170: behind, no update
    sched.finish(blocker, "completed")
    await until(lambda: seen == [0, 1, 0])
    assert me.state == "queued"
    sched.cancel(me.request_id, "a")
    await asyncio.wait_for(watcher, 2.0)
