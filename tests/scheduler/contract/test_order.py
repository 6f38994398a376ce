"""The contract on order: priority, fairness between users, aging, conversations, put back."""

from __future__ import annotations

from service.scheduler.hosts import Host
from service.scheduler.interface import Admission, RequestScheduler, RequestSpec
from tests.scheduler.contract.conftest import Backend, until

BIG = {"max_pending": 1000, "max_pending_per_user": 1000}


async def submit(
    sched: RequestScheduler, user: str, rid: str, priority: int = 5, **kw: object
) -> Admission:
    return await sched.submit(
        RequestSpec(request_id=rid, user_id=user, provider="ollama", priority=priority, **kw)  # type: ignore[arg-type]
    )


async def running(sched: RequestScheduler) -> list[str]:
    return [i.request_id for i in await sched.requests() if i.state == "running"]


async def run_one_at_a_time(
    sched: RequestScheduler, first: Admission, users: dict[str, str]
) -> list[str]:
    """Finish the running request over and over; the ids in the order they got the slot."""
    started: list[str] = []
    current = first.request_id
    for _ in users:
        await sched.finish(current, users.get(current, first.user_id), "completed")
        (current,) = await running(sched)
        started.append(current)
    return started


async def test_the_most_urgent_priority_runs_first(backend: Backend) -> None:
    sched = await backend.make(slots={"ollama": 1}, **BIG)
    blocker = await submit(sched, "x", "blocker")
    assert await running(sched) == ["blocker"]  # a free slot is taken at once
    users = {}
    for p in (5, 1, 10, 3):
        await submit(sched, f"u{p}", f"p{p}", p)
        users[f"p{p}"] = f"u{p}"
    assert await run_one_at_a_time(sched, blocker, users) == ["p1", "p3", "p5", "p10"]


async def test_a_burst_delays_another_users_first_request_by_one_at_most(backend: Backend) -> None:
    sched = await backend.make(slots={"ollama": 1}, **BIG)
    burst = [await submit(sched, "alice", f"a{i}") for i in range(6)]
    backend.clock.advance(1.0)
    await submit(sched, "bob", "b0")
    assert (await sched.status("b0", "bob")).position <= 1
    users = {f"a{i}": "alice" for i in range(1, 6)} | {"b0": "bob"}
    order = await run_one_at_a_time(sched, burst[0], users)
    assert order.index("b0") <= 1


async def test_aging_lifts_an_old_low_priority_request_above_a_new_urgent_one(
    backend: Backend,
) -> None:
    sched = await backend.make(slots={"ollama": 1}, aging_interval_s=30.0, **BIG)
    blocker = await submit(sched, "x", "blocker")
    await submit(sched, "old", "slow", priority=10)
    backend.clock.advance(30.0 * 10)
    await submit(sched, "new", "urgent", priority=1)
    assert (await sched.status("slow", "old")).position == 0
    order = await run_one_at_a_time(sched, blocker, {"slow": "old", "urgent": "new"})
    assert order == ["slow", "urgent"]
    # Without the wait, urgent work goes first.
    await submit(sched, "old", "slow2", priority=10)
    await submit(sched, "new", "urgent2", priority=1)
    assert (await sched.status("urgent2", "new")).position == 0


async def test_a_conversations_next_turn_waits_for_finish_even_after_release(
    backend: Backend,
) -> None:
    sched = await backend.make(slots={"ollama": 2}, **BIG)
    first = await submit(sched, "alice", "t1", conversation_id="c1")
    await submit(sched, "alice", "t2", conversation_id="c1")
    other = await submit(sched, "bob", "o1", conversation_id="c2")
    assert sorted(await running(sched)) == ["o1", "t1"]
    await sched.finish(other.request_id, "bob", "completed")
    grant = await sched.acquire(first)
    await sched.release(grant)  # the slot is free, but the conversation is still held
    assert (await sched.status("t2", "alice")).state == "queued"
    await sched.finish("t1", "alice", "completed")
    assert (await sched.status("t2", "alice")).state == "running"


async def test_a_command_waits_only_for_its_conversation(backend: Backend) -> None:
    sched = await backend.make(slots={"ollama": 1}, **BIG)
    await submit(sched, "alice", "t1", conversation_id="c1")
    await submit(sched, "bob", "t2")  # the only slot is taken
    await sched.submit(RequestSpec("cmd", "alice", "", conversation_id="c1"))
    await sched.submit(RequestSpec("free", "carol", ""))
    assert (await sched.status("cmd", "alice")).state == "queued"
    assert (await sched.status("free", "carol")).state == "running"
    await sched.finish("t1", "alice", "completed")
    assert (await sched.status("cmd", "alice")).state == "running"


async def test_put_back_goes_to_the_front_and_avoids_the_failed_host(backend: Backend) -> None:
    hosts = {"ollama": [Host("http://h1", 1), Host("http://h2", 1)]}
    sched = await backend.make(slots={}, hosts=hosts, **BIG)
    a = await submit(sched, "alice", "a")
    await submit(sched, "bob", "b")
    await submit(sched, "carol", "c")
    grant = await sched.acquire(a)
    await sched.report_host("ollama", grant.backend, up=False, error="refused")
    await until(lambda: grant.signal.is_host_lost)
    assert not next(h for h in sched.hosts("ollama") if h.name == grant.backend).up
    await sched.put_back(grant)
    assert (await sched.status("a", "alice")).position == 0
    assert (await sched.status("c", "carol")).position == 1
    await sched.finish("b", "bob", "completed")
    again = await sched.acquire(a)
    assert again.backend != grant.backend and again.tried == (grant.backend,)
    assert (await sched.status("c", "carol")).state == "queued"
