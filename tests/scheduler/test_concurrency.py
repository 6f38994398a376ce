"""The slot invariant under many tasks submitting, timing out, cancelling and finishing at once."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter

import pytest

from service.errors import DeadlineExceeded, RequestCancelled
from service.scheduler import Outcome, Scheduler, Ticket


@pytest.mark.parametrize("seed", range(6))
async def test_running_never_exceeds_slots_under_churn(seed: int) -> None:
    rng = random.Random(seed)
    slots = {"ollama": 2, "anthropic": 3}
    sched = Scheduler(slots=slots, max_pending=1000, max_pending_per_user=1000)
    running: Counter[str] = Counter()
    peak: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    tickets: list[Ticket] = []

    async def worker() -> None:
        provider = rng.choice(sorted(slots))
        ticket = sched.submit(
            user_id=f"u{rng.randrange(6)}", provider=provider, priority=rng.randint(1, 10)
        )
        tickets.append(ticket)
        try:
            await asyncio.sleep(rng.uniform(0, 0.002))  # acquire a little after submitting
        except asyncio.CancelledError:
            sched.finish(ticket, "cancelled")  # a worker that never acquires must finish
            raise
        try:
            await sched.acquire(ticket, timeout=rng.choice([None, 0.004, 0.02, 0.2]))
        except (RequestCancelled, DeadlineExceeded) as exc:
            outcomes[type(exc).__name__] += 1
            return
        running[provider] += 1
        peak[provider] = max(peak[provider], running[provider])
        assert running[provider] <= slots[provider]
        assert sched.stats().providers[provider].running <= slots[provider]
        aborted = asyncio.Event()
        ticket.add_cancel_callback(aborted.set)
        outcome: Outcome = "completed"
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(rng.uniform(0, 0.006)):
                    await aborted.wait()
        except BaseException:
            outcome = "failed"
            raise
        finally:
            running[provider] -= 1
            sched.finish(ticket, outcome)
            outcomes["ran"] += 1

    tasks = [asyncio.create_task(worker()) for _ in range(50)]

    async def chaos() -> None:
        for _ in range(40):
            await asyncio.sleep(rng.uniform(0, 0.003))
            if rng.random() < 0.5 and tickets:
                victim = rng.choice(tickets)
                sched.cancel(victim.request_id, victim.user_id)
            else:
                rng.choice(tasks).cancel()

    await chaos()
    results = await asyncio.gather(*tasks, return_exceptions=True)

    unexpected = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(r, asyncio.CancelledError) for r in unexpected), unexpected
    for provider, n in slots.items():
        assert peak[provider] <= n
    assert max(peak.values()) >= 2  # there really was contention
    assert outcomes["ran"] > 0 and outcomes["RequestCancelled"] + outcomes["DeadlineExceeded"] > 0
    assert all(t.state in ("completed", "cancelled", "failed") for t in tickets)
    assert not any(t.holds_slot for t in tickets)
    stats = sched.stats()
    assert (stats.total_waiting, stats.total_running, sched.active_users()) == (0, 0, 0)
    # and the scheduler still works afterwards
    fresh = sched.submit(user_id="after", provider="ollama")
    await sched.acquire(fresh, timeout=1.0)
    sched.finish(fresh, "completed")


async def test_a_freed_slot_goes_to_the_waiter_not_to_a_newcomer() -> None:
    sched = Scheduler(slots={"ollama": 1})
    holder = sched.submit(user_id="a", provider="ollama")
    waiter = sched.submit(user_id="b", provider="ollama", priority=10)
    task = asyncio.create_task(sched.acquire(waiter))
    await asyncio.sleep(0)
    sched.finish(holder, "completed")
    newcomer = sched.submit(user_id="c", provider="ollama", priority=1)
    assert newcomer.state == "queued"
    await asyncio.wait_for(task, 1.0)
    assert waiter.state == "running"
    assert sched.stats().total_running == 1


async def test_many_waiters_all_time_out_together_and_leave_nothing_behind() -> None:
    sched = Scheduler(slots={"ollama": 1}, max_pending=100, max_pending_per_user=100)
    holder = sched.submit(user_id="a", provider="ollama")
    waiters = [sched.submit(user_id=f"u{i % 3}", provider="ollama") for i in range(30)]
    results = await asyncio.gather(
        *(sched.acquire(t, timeout=0.02) for t in waiters), return_exceptions=True
    )
    assert all(isinstance(r, DeadlineExceeded) for r in results)
    assert sched.stats().total_waiting == 0
    assert sched.active_users() == 1
    sched.finish(holder, "completed")
    assert sched.stats().total_running == 0
