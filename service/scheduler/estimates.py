"""Recent timings and what they predict: wait estimates, retry hints, queue statistics."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


class MovingAverage:
    """Exponential moving average that reports its seed until the first sample arrives."""

    def __init__(self, seed: float, weight: float = 0.2) -> None:
        if not 0 < weight <= 1:
            raise ValueError("weight must be in (0, 1]")
        self._value = seed
        self._weight = weight
        self.samples = 0

    @property
    def value(self) -> float:
        return self._value

    def add(self, sample: float) -> None:
        sample = max(sample, 0.0)
        if self.samples == 0:
            self._value = sample
        else:
            self._value += self._weight * (sample - self._value)
        self.samples += 1


# Far back in a long queue a position is told less often: past this many requests
# ahead, the pause between two updates grows in proportion to the position, so
# the updates of n waiting streams cost n log n over their wait, not n squared.
POSITION_STRETCH_AFTER = 200


def position_gap(interval_s: float, position: int) -> float:
    """The least pause before a stream last told ``position`` is told a new one."""
    return interval_s * max(1.0, position / POSITION_STRETCH_AFTER)


def start_delay(
    position: int, slots: int, running_elapsed: Iterable[float], mean_service_s: float
) -> float:
    """Seconds until the request at ``position`` should get a slot.

    The model: every request takes the average service time. A running request
    frees its slot after the rest of that average (at once if it has already
    run longer); an idle slot is free now. The slots then serve the queue in
    turn, so the request at ``position`` takes the (position % slots)-th
    earliest free slot, after ``position // slots`` full services ahead of it
    on that slot. Because each remaining time is at most one average, this is
    exactly the time a slot-by-slot replay of the queue would give.
    """
    return FreeSlots(slots, running_elapsed, mean_service_s).delay(position)


class FreeSlots:
    """When each slot of a lane frees up (``start_delay`` for many positions at once)."""

    def __init__(self, slots: int, running_elapsed: Iterable[float], mean_service_s: float) -> None:
        self._slots = slots
        self._mean = mean_service_s
        self._remaining = sorted(max(mean_service_s - e, 0.0) for e in running_elapsed)
        # The idle slots come first (free now); not materialized, a lane may have 2**30 slots.
        self._idle = max(slots - len(self._remaining), 0)

    def delay(self, position: int) -> float:
        rounds, lane = divmod(position, self._slots)
        free = 0.0 if lane < self._idle else self._remaining[lane - self._idle]
        return free + rounds * self._mean


@dataclass(frozen=True)
class HostStats:
    """One host of a provider's pool, as the status endpoint shows it."""

    name: str  # the host's URL
    up: bool
    since: float  # wall-clock time it last went up or down (its start, if never)
    slots: int
    running: int
    models: tuple[str, ...]  # the models it serves; empty when it serves any
    loaded: tuple[str, ...]  # the models loaded in its memory at the last probe
    last_error: str  # why it last failed a probe or a call; empty if never


@dataclass(frozen=True)
class ProviderQueueStats:
    """One provider's queue: what waits, what runs, and how long things take lately."""

    provider: str
    slots: int
    running: int
    waiting: int
    waiting_by_priority: Mapping[int, int]  # original priority → waiting requests
    avg_wait_s: float  # moving average of the queue wait of recently started requests
    avg_service_s: float  # moving average of recent service times (a default until measured)
    hosts: tuple[HostStats, ...] = ()  # the pool's hosts; empty for a provider without one


@dataclass(frozen=True)
class QueueStats:
    """The scheduler at a glance, for the status endpoint and metrics."""

    providers: Mapping[str, ProviderQueueStats]
    total_waiting: int
    total_running: int
    max_pending: int
    max_pending_per_user: int
    active_users: int
    accepting: bool  # False once shutdown has begun
