"""One provider's share of the scheduler: its slots, its queue, its recent timings."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Callable

from service.scheduler.estimates import MovingAverage, ProviderQueueStats, start_delay
from service.scheduler.queue import DispatchQueue
from service.scheduler.registry import Ticket


class Pulse:
    """Wakes every task waiting on it at the moment it fires; later waiters wait for the next."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, max_wait_s: float | None = None) -> None:
        """Return at the next fire, or after ``max_wait_s`` seconds without one."""
        event = self._event
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max_wait_s):
                await event.wait()


class Lane:
    """The slots of one provider and the requests waiting for them."""

    def __init__(
        self, provider: str, slots: int, *, aging_interval_s: float, default_service_s: float
    ) -> None:
        self.provider = provider
        self.slots = slots
        self.queue: DispatchQueue[Ticket] = DispatchQueue(aging_interval_s)
        self.running: set[Ticket] = set()
        self.service_time = MovingAverage(default_service_s)
        self.wait_time = MovingAverage(0.0)
        self.changed = Pulse()  # fires whenever positions in this lane may have moved

    @property
    def has_free_slot(self) -> bool:
        return len(self.running) < self.slots

    def estimate_wait(self, position: int, now: float) -> float:
        elapsed = [now - t.started_mono for t in self.running if t.started_mono is not None]
        return start_delay(position, self.slots, elapsed, self.service_time.value)

    async def watch(
        self, ticket: Ticket, clock: Callable[[], float], min_interval_s: float
    ) -> AsyncIterator[tuple[int, float]]:
        """Yield (position, estimated wait) at once and on every change while ``ticket`` waits."""
        loop = asyncio.get_running_loop()
        last: int | None = None
        last_sent = -math.inf
        while ticket.state == "queued":
            now = clock()
            position = self.queue.position(ticket, now)
            if position != last:
                pause = last_sent + min_interval_s - loop.time()
                if pause > 0:
                    # Not a plain sleep: a ticket handed its slot meanwhile must not idle
                    # out the pause before its request goes upstream. Nor the lane's pulse:
                    # with n waiters, every queue change would wake all n during the pause.
                    await ticket.wait_left_queue(pause)
                    continue  # look again: what is sent is the position after the pause
                last, last_sent = position, loop.time()
                yield position, self.estimate_wait(position, now)
                continue
            # Positions move on queue changes (the pulse) and when aging lifts a level.
            reorder_at = self.queue.reorder_at(now)
            await self.changed.wait(None if reorder_at is None else max(reorder_at - now, 1e-3))

    def stats(self) -> ProviderQueueStats:
        by_priority: dict[int, int] = {}
        for ticket in self.queue:
            by_priority[ticket.priority] = by_priority.get(ticket.priority, 0) + 1
        return ProviderQueueStats(
            provider=self.provider,
            slots=self.slots,
            running=len(self.running),
            waiting=len(self.queue),
            waiting_by_priority=dict(sorted(by_priority.items())),
            avg_wait_s=self.wait_time.value,
            avg_service_s=self.service_time.value,
        )
