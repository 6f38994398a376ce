"""Every request's event log, by user and request id, bounded in time and in bytes.

A run is kept while its request is going on and for ``resume_window_s``
after it ended. All buffers together hold at most ``max_bytes`` (by the
estimate of ``run.event_size``): past it, the runs that ended first are
dropped first (a re-attach then falls back to the stored answer), and only
when no ended run is left do running requests lose their oldest events.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from service.streams.run import Policy, TurnRun


class RunRegistry:
    """Turn runs by (user_id, request_id); pruned lazily, like the scheduler's registry."""

    def __init__(
        self,
        *,
        resume_window_s: float,
        buffer_events: int,
        max_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._window_s = resume_window_s
        self._buffer_events = buffer_events
        self._max_bytes = max_bytes
        self._clock = clock
        self._runs: dict[tuple[str, str], TurnRun] = {}
        # Runs end in clock order, so this is both the expiry FIFO and the eviction order.
        self._ended: deque[TurnRun] = deque()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._runs)

    @property
    def total_bytes(self) -> int:
        """The estimated size of every buffered run."""
        return self._bytes

    def get(self, user_id: str, request_id: str) -> TurnRun | None:
        """The user's run with this id, unless it expired or was evicted."""
        self.prune()
        return self._runs.get((user_id, request_id))

    def open(
        self, user_id: str, request_id: str, message: str, policy: Policy, first_seq: int = 1
    ) -> TurnRun:
        """A new, empty run registered under (user_id, request_id), replacing none.

        ``first_seq`` numbers its first event (a run adopted from another replica starts
        above any number the old one can have sent, so event ids only grow).
        """
        self.prune()
        key = (user_id, request_id)
        if key in self._runs:
            raise ValueError(f"run {request_id!r} of {user_id!r} exists")  # callers check get()
        run = TurnRun(
            user_id=user_id,
            request_id=request_id,
            message=message,
            policy=policy,
            max_events=self._buffer_events,
            ledger=self,
            first_seq=first_seq,
        )
        self._runs[key] = run
        self.grew(run, run.size)
        return run

    def forget(self, run: TurnRun) -> None:
        """Drop a run at once (a request refused before it was accepted)."""
        if self._runs.get((run.user_id, run.request_id)) is run:
            del self._runs[(run.user_id, run.request_id)]
            self._bytes -= run.size

    def prune(self) -> None:
        """Drop the runs that ended more than ``resume_window_s`` ago."""
        horizon = self._clock() - self._window_s
        while self._ended and (self._ended[0].ended_at or 0.0) <= horizon:
            self.forget(self._ended.popleft())

    # --- the Ledger the runs report to ------------------------------------------

    def grew(self, run: TurnRun, delta: int) -> None:
        self._bytes += delta
        if self._bytes > self._max_bytes:
            self._shrink()

    def ended(self, run: TurnRun) -> None:
        run.ended_at = self._clock()
        self._ended.append(run)

    def _shrink(self) -> None:
        while self._bytes > self._max_bytes and self._ended:
            self.forget(self._ended.popleft())
        if self._bytes <= self._max_bytes:
            return
        # Only running requests are left: the oldest events go, oldest runs first.
        for run in list(self._runs.values()):
            if self._bytes <= self._max_bytes:
                return
            self._bytes -= run.trim(self._bytes - self._max_bytes)
