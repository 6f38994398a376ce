"""What the in-process scheduler keeps of a finished request: its record, not its run.

Records stay for ``queue.retention_s`` and every full collection of the
garbage collector walks what they hold, so a record holds nothing the run
needed: no lease signal, no events, no callbacks.
"""

from __future__ import annotations

import asyncio
import gc

import pytest

from service.scheduler.interface import LeaseSignal, RequestSpec
from service.scheduler.memory import MemoryScheduler
from service.scheduler.scheduler import Scheduler


def reachable(root: object, depth: int) -> list[object]:
    """Objects reachable from ``root`` in at most ``depth`` references (types not entered)."""
    seen, frontier = [root], [root]
    for _ in range(depth):
        frontier = [
            ref for obj in frontier for ref in gc.get_referents(obj) if not isinstance(ref, type)
        ]
        seen += frontier
    return seen


def run_only(obj: object) -> bool:
    return isinstance(obj, LeaseSignal | asyncio.Event) or callable(obj)


@pytest.mark.parametrize("outcome", ["completed", "failed", "cancelled"])
async def test_a_finished_request_keeps_its_record_and_nothing_of_its_run(outcome: str) -> None:
    scheduler = MemoryScheduler(Scheduler(slots={"ollama": 1}))
    admission = await scheduler.submit(RequestSpec("r1", "alice", "ollama"))
    grant = await scheduler.acquire(admission)
    if outcome == "cancelled":
        await scheduler.cancel("r1", "alice")
    await scheduler.release(grant)
    await scheduler.finish("r1", "alice", "failed" if outcome == "failed" else "completed")
    assert (await scheduler.status("r1", "alice")).state == outcome
    record = scheduler.engine.find("r1", "alice")
    assert record is not None
    assert [obj for obj in reachable(record, 3) if run_only(obj)] == []


async def test_a_request_that_never_got_a_slot_keeps_nothing_of_its_wait() -> None:
    scheduler = MemoryScheduler(Scheduler(slots={"ollama": 1}))
    first = await scheduler.acquire(await scheduler.submit(RequestSpec("r1", "alice", "ollama")))
    await scheduler.submit(RequestSpec("r2", "bob", "ollama"))  # waits behind r1
    await scheduler.cancel("r2", "bob")
    record = scheduler.engine.find("r2", "bob")
    assert record is not None and record.state == "cancelled"
    assert [obj for obj in reachable(record, 3) if run_only(obj)] == []
    await scheduler.release(first)
