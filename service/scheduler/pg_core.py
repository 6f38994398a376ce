"""The plumbing of one replica of the shared queue: connections, locks, wake-ups, leases.

``PostgresScheduler`` (``service.scheduler.postgres``) is this core plus its
parts: leases (``pg_requests``) and the request directory (``pg_directory``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from service.errors import AgentError, NotFound, RequestCancelled, ServiceUnavailable
from service.scheduler.hosts import Host
from service.scheduler.interface import LeaseSignal
from service.scheduler.pg_admission import Rules
from service.scheduler.pg_board import Board, Figures, Key
from service.scheduler.pg_dispatch import Dispatched, dispatch, forget_replica, lock
from service.scheduler.pg_estimates import board, estimate_wait, position
from service.scheduler.pg_hosts import HostState, seed_hosts, topology
from service.scheduler.pg_leases import Beacon, Heartbeat, Held, Wakeups, beat, renew
from service.scheduler.pg_rows import row_error, row_info
from service.scheduler.pg_schema import create_schema, scope
from service.scheduler.registry import RequestInfo

log = logging.getLogger(__name__)

# How far another replica's clock may be behind this one's for a row it ended to be
# found by the scan after a change (the scan of every waiter each poll finds the rest).
SKEW_S = 5.0
# A waiting request looks at its own row every this many safety polls; in between the
# replica's one scan of all its waiters (after each change and each poll) wakes it.
WAITER_POLLS = 10
# Lease renewal may wait this many leases (a busy dispatch lock, a database restart)
# before the heartbeat lapses and the replica's grants go to others.
RENEWAL_GRACE = 3
# At most one shared read of the waiting requests' positions per this many seconds.
BOARD_GAP_S = 0.1
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# asyncpg's InternalClientError ("cannot switch to state ...; another operation is in
# progress") is a connection left mid-operation when the server went away under it.
UNREACHABLE = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)
# The database is down, the connection died, or the server cannot take the work now (not
# a statement that failed on its merits): callers answer UNAVAILABLE, or wait and retry.
CONNECTION_LOST = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    # 53xxx: too many connections (max_connections reached), out of memory or disk.
    asyncpg.exceptions.InsufficientResourcesError,
    # 40xxx: a deadlock or serialization failure rolled the transaction back.
    asyncpg.exceptions.TransactionRollbackError,
)


async def _keep_session(_conn: Any) -> None:
    """The pool's reset on release: nothing to undo (see ``SchedulerCore.open``)."""


class SchedulerCore:
    """The state and plumbing every part of ``PostgresScheduler`` shares (one per replica).

    ``slots`` / ``hosts`` are the same configuration every replica gets (as
    for the in-process ``Scheduler``); ``schema`` (tests) puts the tables in
    their own schema. ``open()`` before use, ``close()`` after.
    """

    def __init__(
        self,
        dsn: str,
        *,
        slots: Mapping[str, int],
        hosts: Mapping[str, Sequence[Host]] | None = None,
        replica_id: str,
        lease_s: float = 10.0,
        max_pending: int = 100,
        max_pending_per_user: int = 10,
        aging_interval_s: float = 30.0,
        retention_s: float = 600.0,
        default_service_s: float = 10.0,
        down_retry_s: float = 5.0,
        clock: Callable[[], float] = time.time,
        schema: str | None = None,
        poll_s: float = 1.0,
        heartbeat_s: float | None = None,
        pool_size: int = 10,
        on_connect: Callable[[Any], Awaitable[None]] | None = None,
        address: str = "",
    ) -> None:
        if schema is not None and not _SCHEMA_NAME.fullmatch(schema):
            raise ValueError(f"schema {schema!r} must be a lower-case identifier")
        if not (0 < aging_interval_s < math.inf):
            raise ValueError("aging_interval_s must be positive and finite")
        if lease_s <= 0 or retention_s < 0 or max_pending < 0 or max_pending_per_user < 0:
            raise ValueError("lease_s must be positive; caps and retention_s not negative")
        if not replica_id:
            raise ValueError("replica_id must not be empty")
        self.replica_id = replica_id
        self.address = address  # this replica's gRPC address, for watches forwarded here
        self.lease_s = lease_s
        self._pools = topology(slots, hosts)
        self._rules = Rules(
            max_pending=max_pending,
            max_pending_per_user=max_pending_per_user,
            aging_interval_s=aging_interval_s,
            default_service_s=default_service_s,
            down_retry_s=down_retry_s,
            retention_s=retention_s,
        )
        self._dsn = dsn
        self._schema = schema
        self._settings = {
            "application_name": "agent-service-scheduler",
            # A replica frozen inside a transaction (SIGSTOP, a stalled VM) would hold the
            # dispatch lock and stall every replica; the server ends such a session instead.
            "idle_in_transaction_session_timeout": str(int(max(0.5, lease_s / 4) * 1000)),
        }
        if schema:
            self._settings["search_path"] = schema
        self._retention_s = retention_s
        self._clock = clock
        self._heartbeat_s = heartbeat_s if heartbeat_s is not None else lease_s / 3
        self._pool_size = pool_size
        self._on_connect = on_connect  # e.g. a query counter (scripts/bench_scheduler.py)
        self._pool: Any = None
        self._scope = scope(schema)
        self._wakeups = Wakeups(dsn, self._settings, poll_s, self._scope.channel)
        self._heartbeat = Heartbeat(
            dsn,
            self._settings,
            replica_id,
            lease_s,
            self._heartbeat_s,
            lambda: self.address,
            self._renewing,
        )
        self._renewal: asyncio.Task[None] | None = None
        self._renewed_at = -math.inf  # event-loop time of the last successful lease renewal
        self._poll_s = poll_s
        self._housekept = -math.inf  # event-loop time of the last rescue and prune
        self._changed = Beacon()  # fires after every dispatch this replica ran or heard of
        self._board = Board(
            self._read_board, lambda: self._changed.generation, poll_s, min(BOARD_GAP_S, poll_s)
        )
        # Each local acquire's key and the event set when its row leaves the queue; one
        # query looks for all of them after a change (not one query per waiter).
        self._waiters: dict[tuple[str, str], asyncio.Event] = {}
        self._scan: asyncio.Task[None] | None = None
        self._rescan = False
        self._rescan_all = False  # the next scan reads every waiter's row
        self._scanned_at = -math.inf  # clock() when the last scan started
        self._held: dict[tuple[str, str], Held] = {}
        self._signals: dict[tuple[str, str], LeaseSignal] = {}
        self._hosts: dict[str, list[HostState]] = {}
        self._running: dict[tuple[str, str], int] = {}
        self._closing: str | None = None

    # -- life cycle -------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, create the tables if missing, register this replica, start listening."""
        self._pool = await asyncpg.create_pool(
            self._dsn,
            min_size=1,
            max_size=self._pool_size,
            server_settings=self._settings,
            init=self._on_connect,
            # No session state to reset: locks are transaction-scoped, LISTEN has its own
            # connection; asyncpg's default reset is one more round trip per use.
            reset=_keep_session,
        )
        try:
            async with self._pool.acquire() as conn:
                await create_schema(conn, self._schema)
                await seed_hosts(conn, self._pools, self._clock())
                await conn.executemany(
                    "INSERT INTO sched_lanes (provider, avg_service_s) VALUES ($1, $2)"
                    " ON CONFLICT (provider) DO NOTHING",
                    [(p, self._rules.default_service_s) for p in self._pools],
                )
                async with conn.transaction():
                    await lock(conn, self._scope.lock_key)
                    await forget_replica(conn, self.replica_id, self._clock())
                    await beat(conn, self.replica_id, self.lease_s, self.address)
                    await conn.execute(
                        "UPDATE sched_replicas SET accepting = true WHERE replica_id = $1",
                        self.replica_id,
                    )
                    await conn.execute("SELECT pg_notify($1, '')", self._scope.channel)
            await self._wakeups.start(self._on_wake)
        except BaseException:
            await self._pool.close()
            raise
        self._renewed_at = asyncio.get_running_loop().time()
        self._heartbeat.start()
        self._renewal = asyncio.create_task(self._renew(), name="sched-renewal")
        self._renewal.add_done_callback(_report_death)

    async def close(self) -> None:
        """Stop listening and heartbeating; rows this replica still holds expire and are rescued."""
        await self._heartbeat.close()  # first: it would take the stopped renewal for stuck
        for task in (self._renewal, self._scan):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._renewal = self._scan = None
        await self._wakeups.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            with contextlib.suppress(*UNREACHABLE):
                await pool.execute(
                    "UPDATE sched_replicas SET expires_at = now() WHERE replica_id = $1",
                    self.replica_id,
                )
            await pool.close()

    # -- shared plumbing ----------------------------------------------------------------

    @asynccontextmanager
    async def _locked(self) -> AsyncIterator[Any]:
        """A transaction holding the dispatch lock."""
        if self._pool is None:
            raise ServiceUnavailable("the shared queue is not open", retry_after_s=1.0)
        async with self._pool.acquire() as conn, conn.transaction():
            await lock(conn, self._scope.lock_key)
            yield conn

    async def _dispatch(
        self,
        conn: Any,
        *,
        notify: bool = True,
        housekeeping: bool = False,
        every_lane: bool = False,
        hosts: dict[str, list[HostState]] | None = None,
    ) -> Dispatched:
        """Dispatch inside the caller's locked transaction; wake the other replicas."""
        done = await dispatch(
            conn,
            self._pools,
            lease_s=self.lease_s,
            now=self._clock(),
            retention_s=self._retention_s,
            down_retry_s=self._rules.down_retry_s,
            aging_interval_s=self._rules.aging_interval_s,
            housekeeping=housekeeping,
            every_lane=every_lane,
            hosts=hosts,
        )
        self._hosts, self._running = done.hosts, done.running
        if notify or done.changed:
            await conn.execute("SELECT pg_notify($1, '')", self._scope.channel)
        return done

    async def _on_wake(self) -> None:
        """A notification or the poll: dispatch, then tell local holders what changed.

        Rescue and pruning run at most once per poll interval; a round with
        nothing waiting and no housekeeping due takes no lock at all.
        """
        now = asyncio.get_running_loop().time()
        housekeeping = now - self._housekept >= self._poll_s
        if housekeeping or await self._pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM sched_requests WHERE state = 'queued')"
        ):
            async with self._locked() as conn:
                await self._dispatch(conn, notify=False, housekeeping=housekeeping)
            if housekeeping:
                self._housekept = now
        await self._check_held()
        self._announce(every_waiter=housekeeping)

    def _announce(self, every_waiter: bool = False) -> None:
        """Something changed: wake the position watchers and look for the waiters' grants.

        ``every_waiter`` (once a poll) looks at every local waiter's row, which
        also finds one handed to another replica; otherwise only the rows that
        just left the queue are read.
        """
        self._changed.fire()
        if not self._waiters:
            return
        self._rescan_all = self._rescan_all or every_waiter
        if self._scan is not None and not self._scan.done():
            self._rescan = True  # the running scan looks once more when it is done
            return
        self._scan = asyncio.create_task(self._scan_waiters(), name="sched-waiters")

    async def _scan_waiters(self) -> None:
        """Wake the local waiters whose rows left the queue (after a change, and every poll).

        One query for all of them: a waiter's own look at its row is only a slow
        safety net (``WAITER_POLLS`` polls), so W waiters do not cost W reads a poll.
        After a change only the rows that can have just left the queue are read
        (granted and not yet taken, or ended before they were taken): not every
        waiter's key.
        """
        while self._waiters:
            self._rescan = False
            every, self._rescan_all = self._rescan_all, False
            started = self._clock()
            try:
                if every:
                    keys = list(self._waiters)
                    # Out of the queue, or handed over to another replica (adopted).
                    rows = await self._pool.fetch(
                        "SELECT r.user_id, r.request_id FROM sched_requests r"
                        " JOIN unnest($1::text[], $2::text[]) AS k(u, q)"
                        " ON r.user_id = k.u AND r.request_id = k.q"
                        " WHERE r.state <> 'queued' OR r.owner <> $3",
                        [k[0] for k in keys],
                        [k[1] for k in keys],
                        self.replica_id,
                    )
                else:
                    # Rows ended by another replica carry its clock: a margin for skew
                    # (beyond it, the every-waiter scan of the next poll finds them).
                    rows = await self._pool.fetch(
                        "SELECT user_id, request_id FROM sched_requests"
                        " WHERE owner = $1 AND granted AND NOT picked_up AND NOT closed"
                        " UNION ALL SELECT user_id, request_id FROM sched_requests"
                        " WHERE owner = $1 AND closed AND NOT picked_up AND finished_at >= $2",
                        self.replica_id,
                        min(started, self._scanned_at) - SKEW_S,
                    )
            except UNREACHABLE:
                return  # each waiter looks again itself at its safety poll
            self._scanned_at = started
            for row in rows:
                event = self._waiters.get((row["user_id"], row["request_id"]))
                if event is not None:
                    event.set()
            if not self._rescan:
                return

    async def _renew(self) -> None:
        while True:
            try:
                # Under the dispatch lock like every other multi-row write, so two of them
                # never lock the same rows in different orders. A wait for the lock cannot
                # cost this replica its grants: the heartbeat, on its own connection and
                # without the lock, keeps them from being rescued.
                async with self._locked() as conn:
                    keys = [(u, r, h.epoch) for (u, r), h in self._held.items()]
                    lost = await renew(conn, self.replica_id, self.lease_s, keys)
                self._renewed_at = asyncio.get_running_loop().time()
                for user_id, request_id, epoch in lost:
                    held = self._held.get((user_id, request_id))
                    if held is not None and held.epoch == epoch:  # not a newer grant since
                        self._fence((user_id, request_id))
            except UNREACHABLE as exc:
                log.warning("shared queue: lease renewal failed: %s", exc)
            await asyncio.sleep(self._heartbeat_s)

    def _renewing(self) -> bool:
        """Whether lease renewal still works: its task runs and succeeded lately."""
        task = self._renewal
        if task is None or task.done():
            return False
        stuck_s = asyncio.get_running_loop().time() - self._renewed_at
        return stuck_s < RENEWAL_GRACE * self.lease_s

    def _fence(self, key: tuple[str, str], held: Held | None = None) -> None:
        """Tell the local holder its grant was taken away: stop the upstream call at once."""
        held = held or self._held.pop(key, None)
        if held is not None:
            held.signal.stop(
                "fenced",
                ServiceUnavailable(
                    f"request {key[1]} lost its lease: this service replica was silent for "
                    f"longer than scheduler.lease_s ({self.lease_s:g} s); retry the request",
                    retry_after_s=1.0,
                ),
            )

    async def _check_held(self) -> None:
        """Deliver cancels from any replica, lost leases and lost hosts to local holders."""
        if not self._held:
            return
        before = dict(self._held)  # a grant replaced during the read is not judged by it
        keys = list(before)
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT r.user_id, r.request_id, r.state, r.closed, r.lease_epoch, r.host,"
                " r.error_kind, r.error_code, r.error_message, r.error_reason, r.retry_after_s"
                " FROM sched_requests r JOIN unnest($1::text[], $2::text[]) AS k(u, q)"
                " ON r.user_id = k.u AND r.request_id = k.q",
                [k[0] for k in keys],
                [k[1] for k in keys],
            )
        found = {(r["user_id"], r["request_id"]): r for r in rows}
        down = {h.name for hosts in self._hosts.values() for h in hosts if not h.up}
        for key in keys:
            held = self._held.get(key)
            row = found.get(key)
            if held is None or held is not before[key]:
                continue
            if row is None or row["closed"] or row["lease_epoch"] != held.epoch:
                self._fence(key)
            elif row["state"] == "cancelled":
                held.signal.stop("cancelled", self._error_of(row, key[1]))
            elif held.host and held.host in down and not held.signal.is_host_lost:
                held.signal.lose_host()

    def _error_of(self, row: Mapping[str, Any], request_id: str) -> AgentError:
        return row_error(row) or RequestCancelled(f"request {request_id} was cancelled")

    async def _find_row(self, request_id: str, user_id: str, conn: Any = None) -> Any:
        """The caller's row (None: unknown, past retention, or another user's id).

        Inside a locked transaction pass its ``conn``: a second connection taken
        while holding the lock could wait forever on a pool the lock's waiters fill.
        """
        row = await (conn or self._pool).fetchrow(
            "SELECT * FROM sched_requests WHERE user_id = $1 AND request_id = $2 FOR UPDATE"
            if conn is not None
            else "SELECT * FROM sched_requests WHERE user_id = $1 AND request_id = $2",
            user_id,
            request_id,
        )
        if row is None or (
            row["closed"]
            and row["finished_at"] is not None
            and row["finished_at"] + self._retention_s <= self._clock()
        ):
            return None
        return row

    async def _lookup(self, request_id: str, user_id: str, conn: Any = None) -> Any:
        row = await self._find_row(request_id, user_id, conn)
        if row is None:
            raise NotFound(f"no request with id {request_id!r}")
        return row

    async def _read_board(self, keys: Sequence[Key]) -> dict[Key, Figures]:
        async with self._pool.acquire() as conn:
            return await board(
                conn, keys, self._hosts, self._clock(), self._rules.default_service_s
            )

    async def _info(self, conn: Any, row: Mapping[str, Any]) -> RequestInfo:
        if row["state"] != "queued":
            return row_info(row)
        hosts = self._hosts.get(row["provider"]) or []
        at = await position(conn, row, hosts)
        wait = await estimate_wait(
            conn,
            row["provider"],
            row["model"],
            at,
            hosts,
            self._clock(),
            self._rules.default_service_s,
        )
        return row_info(row, at, wait)


def _report_death(task: asyncio.Task[None]) -> None:
    """The lease renewal loop ended other than by cancellation: say so (its heartbeat lapses)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("shared queue: lease renewal stopped", exc_info=task.exception())
