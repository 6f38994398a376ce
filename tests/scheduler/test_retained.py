"""What the in-process scheduler keeps of a finished request: its record, not its run."""

from __future__ import annotations

import gc

from service.scheduler.interface import RequestSpec
from service.scheduler.memory import MemoryScheduler
from service.scheduler.scheduler import Scheduler


def reachable(root: object, depth: int) -> list[object]:
    """Objects reachable from ``root`` in at most ``depth`` references."""
    seen, frontier = [root], [root]
    for _ in range(depth):
        frontier = [ref for obj in frontier for ref in gc.get_referents(obj)]
        seen += frontier
    return seen


async def test_a_finished_request_keeps_its_record_but_not_its_lease_signal() -> None:
    scheduler = MemoryScheduler(Scheduler(slots={"ollama": 1}))
    admission = await scheduler.submit(RequestSpec("r1", "alice", "ollama"))
    grant = await scheduler.acquire(admission)
    await scheduler.release(grant)
    await scheduler.finish("r1", "alice", "completed")
    assert (await scheduler.status("r1", "alice")).state == "completed"
    record = scheduler.engine.find("r1", "alice")
    assert record is not None
    assert not any(obj is grant.signal for obj in reachable(record, 3))
