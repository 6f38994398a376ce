"""The positions of this replica's waiting requests: one read per change, shared by all.

Every waiting request whose client watches its place in the queue used to read
its own position after each change of the queue: a count over the waiting rows
per watcher, so W watchers cost W counts of up to W rows per change. The board
reads the positions and estimates of every watched request at once
(``pg_estimates.board``) and hands each watcher its figures.

A read is good for a watcher when it started at or after the change the watcher
woke for (the beacon's generation) and is younger than the safety poll, so no
change is missed that the watcher's own read would have seen. Concurrent
lookers share one read in flight; reads run one at a time and at most one per
``min_gap_s``, so a queue that changes hundreds of times a second costs a few
reads a second, each a report late by at most ``min_gap_s``. A request that
was not watched when the read started is ``MISSING`` from it: its watcher
reads its own figures once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

Key = tuple[str, str]  # (user id, request id)
Figures = tuple[int, float]  # (position, estimated wait in seconds)
Read = Callable[[Sequence[Key]], Awaitable[dict[Key, Figures]]]


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()


@dataclass(frozen=True, slots=True)
class _Snapshot:
    generation: int  # the beacon's generation when the read started
    taken_at: float  # event-loop time when the read started
    keys: frozenset[Key]
    found: dict[Key, Figures]


class Board:
    """Shared position reads; ``watching(key)`` while a watcher of ``key`` runs."""

    def __init__(
        self,
        read: Read,
        generation: Callable[[], int],
        max_age_s: float,
        min_gap_s: float = 0.0,
    ) -> None:
        self._read = read
        self._generation = generation
        self._max_age_s = max_age_s
        self._min_gap_s = min_gap_s
        self._watched: dict[Key, int] = {}
        self._snapshot: _Snapshot | None = None
        self._pending: asyncio.Task[_Snapshot] | None = None
        self._pending_generation = -1  # the generation the pending read started at
        self._reading = False  # the pending read has started (it will not see later changes)

    @contextlib.contextmanager
    def watching(self, key: Key) -> Iterator[None]:
        self._watched[key] = self._watched.get(key, 0) + 1
        try:
            yield
        finally:
            left = self._watched[key] - 1
            if left:
                self._watched[key] = left
            else:
                del self._watched[key]

    async def look(self, key: Key, generation: int) -> Figures | _Missing | None:
        """``key``'s figures as of ``generation`` or later; None: it is no longer waiting."""
        snapshot = self._snapshot
        now = asyncio.get_running_loop().time()
        if (
            snapshot is None
            or snapshot.generation < generation
            or now - snapshot.taken_at >= self._max_age_s
        ):
            snapshot = await self._refresh(generation)
        if key not in snapshot.keys:
            return MISSING
        return snapshot.found.get(key)

    async def _refresh(self, generation: int) -> _Snapshot:
        task = self._pending
        # A read still waiting for its turn will see this change too: join it.
        stale = self._reading and self._pending_generation < generation
        if task is None or task.done() or stale:
            task = asyncio.create_task(self._take(task), name="sched-positions")
            task.add_done_callback(_retrieve)
            self._pending, self._reading = task, False
        # One looker giving up (its client went away) must not cancel the others' read.
        return await asyncio.shield(task)

    async def _take(self, previous: asyncio.Task[_Snapshot] | None) -> _Snapshot:
        # One read at a time, at most one per min_gap_s: while the queue changes hundreds
        # of times a second, a read per change would cost more than the reads it saves.
        if previous is not None and not previous.done():
            await asyncio.wait([previous])
        latest = self._snapshot
        if latest is not None:
            pause = latest.taken_at + self._min_gap_s - asyncio.get_running_loop().time()
            if pause > 0:
                await asyncio.sleep(pause)
        generation = self._pending_generation = self._generation()
        self._reading = True
        taken_at = asyncio.get_running_loop().time()
        keys = list(self._watched)
        found = await self._read(keys)
        snapshot = _Snapshot(generation, taken_at, frozenset(keys), found)
        latest = self._snapshot
        if latest is None or latest.taken_at <= taken_at:
            self._snapshot = snapshot
        return snapshot


def _retrieve(task: asyncio.Task[_Snapshot]) -> None:
    """A failed read whose lookers all left is not an unretrieved exception."""
    if not task.cancelled():
        task.exception()
