"""The request directory of the shared queue: status, cancel, lists and statistics.

Answers come from the rows, so any replica answers for any request; a request
is found only under its owner's user id (another user's id reads as absent).
A cancel from any replica marks the row and wakes the others; the replica
holding the grant fires its signal.
"""

from __future__ import annotations

from service.errors import AgentError, RequestCancelled
from service.scheduler.estimates import HostStats, ProviderQueueStats, QueueStats
from service.scheduler.interface import NO_SLOT
from service.scheduler.pg_core import SchedulerCore
from service.scheduler.pg_hosts import load_hosts
from service.scheduler.pg_requests import end_row
from service.scheduler.pg_rows import REQUEST_COLUMNS, error_columns
from service.scheduler.registry import RequestInfo


class Directory(SchedulerCore):
    """Status, cancel and lists for owners and operators, read from the rows."""

    async def cancel(
        self, request_id: str, user_id: str, error: AgentError | None = None
    ) -> RequestInfo:
        key = (user_id, request_id)
        reason = error or RequestCancelled(f"request {request_id} was cancelled")
        async with self._locked() as conn:
            # NotFound for unknown, expired, others'
            row = await self._lookup(request_id, user_id, conn)
            now = self._clock()
            if row["state"] == "queued":
                await end_row(conn, key, "cancelled", now, reason)
            elif row["state"] == "running":
                # The slot stays taken until the holder has closed its upstream and finishes.
                await conn.execute(
                    "UPDATE sched_requests SET state = 'cancelled', cancel_requested = true,"
                    " finished_at = $3, error_kind = $4, error_code = $5, error_message = $6,"
                    " error_reason = $7, retry_after_s = $8"
                    " WHERE user_id = $1 AND request_id = $2",
                    *key,
                    now,
                    *error_columns(reason),
                    reason.retry_after_s,
                )
            await self._dispatch(conn)
            after = await conn.fetchrow(
                f"SELECT {REQUEST_COLUMNS} FROM sched_requests"  # noqa: S608
                " WHERE user_id = $1 AND request_id = $2",
                *key,
            )
            info = await self._info(conn, after)
        held = self._held.get(key)
        if held is not None and info.state == "cancelled":
            held.signal.stop("cancelled", reason.copy())
        self._announce()
        return info

    async def find(self, request_id: str, user_id: str) -> RequestInfo | None:
        row = await self._find_row(request_id, user_id)
        if row is None:
            return None
        async with self._pool.acquire() as conn:
            return await self._info(conn, row)

    async def status(self, request_id: str, user_id: str) -> RequestInfo:
        row = await self._lookup(request_id, user_id)
        async with self._pool.acquire() as conn:
            return await self._info(conn, row)

    async def requests(self, user_id: str | None = None) -> list[RequestInfo]:
        """Requests waiting or running (of ``user_id``; None: everyone's), running first.

        Per provider in configuration order: running by start, then waiting by position.
        """
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT {REQUEST_COLUMNS} FROM sched_requests"  # noqa: S608
                " WHERE state IN ('queued', 'running') AND ($1::text IS NULL OR user_id = $1)"
                " ORDER BY state = 'queued', front DESC, order_key, seq",
                user_id,
            )
            order = {name: i for i, name in enumerate([*self._pools, NO_SLOT])}
            rows = sorted(rows, key=lambda r: order.get(r["provider"], len(order)))
            return [await self._info(conn, row) for row in rows]

    async def stats(self) -> QueueStats:
        async with self._pool.acquire() as conn:
            hosts = await load_hosts(conn, self._pools)
            counts = await conn.fetch(
                "SELECT provider, priority, count(*) FILTER (WHERE state = 'queued') AS waiting,"
                " count(*) FILTER (WHERE slot IS NOT NULL) AS running"
                " FROM sched_requests WHERE NOT closed GROUP BY provider, priority"
            )
            per_host = {
                (r["provider"], r["host"]): r["n"]
                for r in await conn.fetch(
                    "SELECT provider, host, count(*) AS n FROM sched_requests"
                    " WHERE slot IS NOT NULL GROUP BY provider, host"
                )
            }
            lanes = {r["provider"]: r for r in await conn.fetch("SELECT * FROM sched_lanes")}
            users = await conn.fetchval(
                "SELECT count(DISTINCT user_id) FROM sched_requests"
                " WHERE NOT closed AND (state = 'queued' OR slot IS NOT NULL)"
            )
        providers: dict[str, ProviderQueueStats] = {}
        total_waiting = sum(r["waiting"] for r in counts)
        for name, states in hosts.items():
            mine = [r for r in counts if r["provider"] == name]
            lane = lanes.get(name)
            providers[name] = ProviderQueueStats(
                provider=name,
                slots=sum(h.slots for h in states if h.up),
                running=sum(r["running"] for r in mine),
                waiting=sum(r["waiting"] for r in mine),
                waiting_by_priority={
                    r["priority"]: r["waiting"]
                    for r in sorted(mine, key=lambda r: r["priority"])
                    if r["waiting"]
                },
                avg_wait_s=lane["avg_wait_s"] if lane else 0.0,
                avg_service_s=lane["avg_service_s"] if lane else self._rules.default_service_s,
                hosts=tuple(
                    HostStats(
                        name=h.name,
                        up=h.up,
                        since=h.since,
                        slots=h.slots,
                        running=per_host.get((name, h.name), 0),
                        models=tuple(sorted(h.models)) if h.models is not None else (),
                        loaded=tuple(sorted(h.loaded)),
                        last_error=h.last_error,
                    )
                    for h in states
                    if h.name
                ),
            )
        stats = QueueStats(
            providers=providers,
            total_waiting=total_waiting,
            total_running=sum(p.running for p in providers.values()),
            max_pending=self._rules.max_pending,
            max_pending_per_user=self._rules.max_pending_per_user,
            active_users=users,
            accepting=self._closing is None,
        )
        self._hosts = hosts
        return stats
