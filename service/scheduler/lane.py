"""One provider's share of the scheduler: its slots, its queue, its recent timings."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Callable, Sequence

from service.scheduler.estimates import (
    HostStats,
    MovingAverage,
    ProviderQueueStats,
    position_gap,
    start_delay,
)
from service.scheduler.hosts import Host
from service.scheduler.queue import DispatchQueue, Spacing
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
        if max_wait_s is None:
            await event.wait()
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max_wait_s):
                await event.wait()


class Lane:
    """The slots of one provider (on its hosts) and the requests waiting for them."""

    def __init__(
        self,
        provider: str,
        hosts: Sequence[Host],
        *,
        spacing: Spacing,
        default_service_s: float,
    ) -> None:
        if not hosts:
            raise ValueError(f"provider {provider!r} needs at least one host")
        self.provider = provider
        self.hosts = list(hosts)
        self.by_name = {h.name: h for h in self.hosts}
        if len(self.by_name) != len(self.hosts):
            raise ValueError(f"provider {provider!r} has two hosts of the same name")
        self.queue: DispatchQueue[Ticket] = DispatchQueue(spacing)
        self.running: set[Ticket] = set()
        self.service_time = MovingAverage(default_service_s)
        self.wait_time = MovingAverage(0.0)
        self.changed = Pulse()  # fires whenever positions in this lane may have moved
        self._fired_version = -1

    def notify(self) -> None:
        """Wake the position watchers if a ranked position may have moved."""
        version = self.queue.version
        if version != self._fired_version or not self._uniform():
            self._fired_version = version
            self.changed.fire()

    @property
    def slots(self) -> int:
        """Slots of the hosts that are up."""
        return sum(h.slots for h in self.hosts if h.up)

    @property
    def has_free_slot(self) -> bool:
        return any(h.free for h in self.hosts)

    def free_hosts(self) -> list[Host]:
        return [h for h in self.hosts if h.free]

    def can_start(self, model: str) -> bool:
        """A host that is up and serves ``model`` has a free slot now."""
        return any(h.free and h.serves(model) for h in self.hosts)

    def serving(self, model: str, *, up_only: bool = True) -> list[Host]:
        return [h for h in self.hosts if (h.up or not up_only) and h.serves(model)]

    def served_models(self) -> list[str] | None:
        """Every model some host serves, sorted; None when some host serves any model."""
        names: set[str] = set()
        for host in self.hosts:
            if host.models is None:
                return None
            names.update(host.models)
        return sorted(names)

    def assign(self, ticket: Ticket, host: Host) -> None:
        ticket.backend = host.name
        host.running.add(ticket)
        self.running.add(ticket)

    def release(self, ticket: Ticket) -> None:
        self.running.discard(ticket)
        host = self.by_name.get(ticket.backend)
        if host is not None:
            host.running.discard(ticket)

    def _uniform(self) -> bool:
        """Every host serves every model, so each waiting request competes with all others."""
        return len(self.hosts) == 1 or all(h.models is None for h in self.hosts)

    def position(self, ticket: Ticket, now: float) -> int:
        """Waiting requests that will start before ``ticket`` on the hosts that serve its model."""
        if self._uniform():
            return self.queue.position(ticket)
        mine = {h.name for h in self.hosts if h.serves(ticket.model)}
        ahead = 0
        for other in self.queue.order():
            if other is ticket:
                return ahead
            if any(h.name in mine for h in self.hosts if h.serves(other.model)):
                ahead += 1
        return ahead

    def estimate_wait(self, position: int, now: float, model: str = "") -> float:
        """Seconds until the request at ``position`` starts, on the healthy hosts of its model."""
        hosts = self.serving(model)
        slots = sum(h.slots for h in hosts)
        if slots == 0:  # no healthy host for it: at least one full service from now
            return (position + 1) * self.service_time.value
        elapsed = [
            now - t.started_mono for h in hosts for t in h.running if t.started_mono is not None
        ]
        return start_delay(position, slots, elapsed, self.service_time.value)

    async def watch(
        self, ticket: Ticket, clock: Callable[[], float], min_interval_s: float
    ) -> AsyncIterator[tuple[int, float]]:
        """Yield (position, estimated wait) at once and on every change while ``ticket`` waits."""
        loop = asyncio.get_running_loop()
        last: int | None = None
        last_sent = -math.inf
        while ticket.state == "queued":
            now = clock()
            position = self.position(ticket, now)
            if position != last:
                pause = last_sent + position_gap(min_interval_s, last or 0) - loop.time()
                if pause > 0:
                    # Not a plain sleep: a ticket handed its slot meanwhile must not idle
                    # out the pause before its request goes upstream. Nor the lane's pulse:
                    # with n waiters, every queue change would wake all n during the pause.
                    await ticket.wait_left_queue(pause)
                    continue  # look again: what is sent is the position after the pause
                last, last_sent = position, loop.time()
                yield position, self.estimate_wait(position, now, ticket.model)
                continue
            # Positions move only when requests arrive ahead or leave (keys do not age):
            # both fire the pulse.
            await self.changed.wait()

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
            hosts=tuple(
                HostStats(
                    name=h.name,
                    up=h.up,
                    since=h.since,
                    slots=h.slots,
                    running=len(h.running),
                    models=tuple(sorted(h.models)) if h.models is not None else (),
                    loaded=tuple(sorted(h.loaded)),
                    last_error=h.last_error,
                )
                for h in self.hosts
                if h.name  # the anonymous host of a provider without a pool
            ),
        )
