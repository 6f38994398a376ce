"""Wake-ups and lease renewal of one replica of the shared queue.

``Wakeups`` owns the LISTEN connection (outside any pool, so a busy pool never
delays a wake-up) and turns every notification, and a slow safety poll, into
a pulse the replica's waiters wait on. A notification only wakes: readers
always re-read the rows, so a lost or merged notification costs latency, not
correctness; the first pulse after LISTEN is set up is the re-check.

``Held`` is a grant this replica holds; ``Beacon`` is how its waiters learn
that something changed without missing a change between a read and a wait.

``Heartbeat`` keeps this replica's own row fresh on a connection of its own;
``renew`` extends the leases of its grants on the database's clock and says
which of them are gone (fenced): a grant's epoch no longer matches. A grant is
rescued only when both its lease and its replica's heartbeat have expired.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import asyncpg

from service.scheduler.interface import LeaseSignal
from service.scheduler.lane import Pulse

log = logging.getLogger(__name__)

# What a loop on a connection of its own survives (and retries): the server gone, a
# statement refused, a connection that died mid-operation.
_FAILED = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)


class Beacon:
    """An event that is replaced when it fires: take ``current()`` before reading, then wait.

    Taking the event before reading the rows means a change between the read
    and the wait is never missed.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.generation = 0  # how many times it fired

    def current(self) -> asyncio.Event:
        return self._event

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()
        self.generation += 1


async def wait_for(event: asyncio.Event, max_wait_s: float | None) -> None:
    """Return when ``event`` is set or after ``max_wait_s`` seconds."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max_wait_s):
            await event.wait()


@dataclass(slots=True)
class Held:
    """A grant this replica holds: the epoch its writes must match, and its signal."""

    epoch: int
    host: str
    signal: LeaseSignal


class _OwnConnection:
    """A loop (``_task``) on a connection of its own (``_conn``), outside any pool."""

    _conn: Any = None
    _task: asyncio.Task[None] | None = None

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            await conn.close()


class Wakeups(_OwnConnection):
    """LISTEN on the queue's channel; ``pulse`` fires on every notification and every poll."""

    def __init__(
        self, dsn: str, server_settings: dict[str, str], poll_s: float, channel: str
    ) -> None:
        self._dsn = dsn
        self._channel = channel
        self._settings = server_settings
        self._poll_s = poll_s
        self.pulse = Pulse()

    async def start(self, on_wake: Callable[[], Awaitable[None]]) -> None:
        await self._listen()
        self._task = asyncio.create_task(self._run(on_wake), name="sched-wakeups")

    async def _listen(self) -> None:
        conn = await asyncpg.connect(self._dsn, server_settings=self._settings)
        await conn.add_listener(self._channel, self._notified)
        self._conn = conn

    def _notified(self, *_: object) -> None:
        self.pulse.fire()

    async def _run(self, on_wake: Callable[[], Awaitable[None]]) -> None:
        # The first round runs at once: the re-check after LISTEN is set up.
        while True:
            try:
                if self._conn is None or self._conn.is_closed():
                    await self._listen()  # a lost listener is replaced; the poll covers the gap
                await on_wake()
            except _FAILED as exc:  # never the end of the wake-ups
                log.warning("shared queue: %s; retrying", exc)
            await self.pulse.wait(self._poll_s)


async def beat(
    conn: Any, replica_id: str, lease_s: float, address: str = "", limit_s: float | None = None
) -> None:
    """This replica is alive for another ``lease_s`` seconds on the database's clock.

    One row that only this replica writes, so it needs no lock: the heartbeat
    runs on a connection of its own and is never held up by a busy dispatch lock
    or pool (its rows' leases are not rescued while it beats: ``sched_beating``).
    """
    await conn.execute(
        "INSERT INTO sched_replicas AS r (replica_id, expires_at, address)"
        " VALUES ($1, now() + make_interval(secs => $2), $3)"
        " ON CONFLICT (replica_id) DO UPDATE SET expires_at = EXCLUDED.expires_at,"
        " address = EXCLUDED.address",
        replica_id,
        lease_s,
        address,
        timeout=limit_s,  # seconds the statement may take (None: no limit)
    )


async def renew(
    conn: Any,
    replica_id: str,
    lease_s: float,
    held: Iterable[tuple[str, str, int]],
) -> set[tuple[str, str, int]]:
    """Extend the leases of every open grant of this replica; the held grants that were lost.

    Grants dispatched but not yet picked up by their waiter are renewed too
    (they are this live replica's). A held grant whose row no longer has its
    epoch, or is closed, was taken away: the caller fences it.
    """
    rows = await conn.fetch(
        "UPDATE sched_requests SET lease_expires_at = now() + make_interval(secs => $2)"
        " WHERE owner = $1 AND granted AND NOT closed"
        " RETURNING user_id, request_id, lease_epoch",
        replica_id,
        lease_s,
    )
    alive = {(r["user_id"], r["request_id"], r["lease_epoch"]) for r in rows}
    return {k for k in held if k not in alive}


class Heartbeat(_OwnConnection):
    """``beat`` every ``every_s`` seconds on a connection outside the pool (replaced if lost).

    ``address`` gives the replica's published gRPC address at each beat (it is
    published after the port is bound). ``healthy`` says whether the replica's
    own work still gets done: while it says no (its lease renewal has not
    succeeded for a long while, or died), the heartbeat lapses, so a wedged
    replica's grants are rescued instead of being held for good.
    """

    def __init__(
        self,
        dsn: str,
        server_settings: dict[str, str],
        replica_id: str,
        lease_s: float,
        every_s: float,
        address: Callable[[], str],
        healthy: Callable[[], bool],
    ) -> None:
        self._dsn = dsn
        self._settings = server_settings
        self._replica_id = replica_id
        self._lease_s = lease_s
        self._every_s = every_s
        self._address = address
        self._healthy = healthy

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sched-heartbeat")

    async def _run(self) -> None:
        failing = lapsed = False
        while True:
            if not self._healthy():
                if not lapsed:
                    log.error(
                        "shared queue: this replica's lease renewal is stuck; its heartbeat "
                        "lapses so that other replicas take its requests over"
                    )
                lapsed = True
                await asyncio.sleep(self._every_s)
                continue
            lapsed = False
            try:
                if self._conn is None or self._conn.is_closed():
                    self._conn = await asyncpg.connect(
                        self._dsn, server_settings=self._settings, timeout=self._lease_s
                    )
                # A half-open connection must not hang the beat for the kernel's minutes.
                await beat(
                    self._conn,
                    self._replica_id,
                    self._lease_s,
                    self._address(),
                    limit_s=self._every_s,
                )
                if failing:
                    log.info("shared queue: heartbeat restored")
                failing = False
            except _FAILED as exc:
                if not failing:
                    log.warning("shared queue: heartbeat failed: %s", exc)
                failing = True
                await self._drop()
            await asyncio.sleep(self._every_s)

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()
