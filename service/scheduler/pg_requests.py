"""Leases of the shared queue: acquire, positions, release, put back, finish.

Every write by a holder names its epoch; a write that matches no row means
this replica was fenced off (its lease expired and the row was rescued), and
the grant's signal fires instead of the write clobbering anything.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Mapping
from typing import Any

from service.errors import (
    AgentError,
    DeadlineExceeded,
    NotFound,
    Reason,
    RequestCancelled,
    ServiceUnavailable,
)
from service.scheduler.admission import retry_hint
from service.scheduler.estimates import position_gap
from service.scheduler.interface import Admission, Grant, LeaseSignal, Position
from service.scheduler.pg_admission import none_up
from service.scheduler.pg_board import MISSING
from service.scheduler.pg_core import CONNECTION_LOST, UNREACHABLE, WAITER_POLLS, SchedulerCore
from service.scheduler.pg_dispatch import record_samples
from service.scheduler.pg_leases import Held, wait_for
from service.scheduler.pg_rows import error_columns
from service.scheduler.registry import OUTCOMES, Outcome

log = logging.getLogger(__name__)

_END = (
    "UPDATE sched_requests SET state = $3, closed = true, slot = NULL,"
    " finished_at = COALESCE(finished_at, $4), error_kind = $5, error_code = $6,"
    " error_message = $7, error_reason = $8, retry_after_s = $9"
    " WHERE user_id = $1 AND request_id = $2"
)


async def end_row(
    conn: Any, key: tuple[str, str], state: str, now: float, error: AgentError | None
) -> None:
    """Close a row with its final state and error."""
    retry = error.retry_after_s if error is not None else None
    await conn.execute(_END, key[0], key[1], state, now, *error_columns(error), retry)


class Requests(SchedulerCore):
    """The holder's side of the port: waiting for a grant and giving it back."""

    async def acquire(self, admission: Admission, timeout: float | None = None) -> Grant:  # noqa: ASYNC109
        key = (admission.user_id, admission.request_id)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        event = self._waiters.setdefault(key, asyncio.Event())
        try:
            while True:
                event.clear()  # before the read: a grant seen after it sets it again
                try:
                    row = await self._find_row(admission.request_id, admission.user_id)
                except UNREACHABLE as exc:
                    # A database blip must not end accepted requests: wait and look again.
                    log.warning("request %s: shared queue unreachable: %s", key[1], exc)
                    if deadline is not None and loop.time() >= deadline:
                        raise ServiceUnavailable(
                            "the shared queue's database cannot be reached; retry shortly",
                            retry_after_s=2.0,
                        ) from exc
                    await wait_for(event, self._poll_s)
                    continue
                if row is None:
                    raise NotFound(f"no request with id {admission.request_id!r}")
                if row["owner"] != self.replica_id:  # adopted while this replica drains
                    raise ServiceUnavailable(
                        f"request {admission.request_id} was handed over to another service "
                        "replica; re-attach to it",
                        retry_after_s=1.0,
                        reason=Reason.REQUEST_MOVED,
                    )
                if row["state"] == "running" and row["granted"] and not row["closed"]:
                    # Taken under its epoch, so a rescue knows it may have gone upstream;
                    # a grant rescued meanwhile is read again (moved, failed or waiting).
                    taken = await self._pool.fetchval(
                        "UPDATE sched_requests SET picked_up = true WHERE user_id = $1"
                        " AND request_id = $2 AND lease_epoch = $3 AND NOT closed RETURNING true",
                        *key,
                        row["lease_epoch"],
                    )
                    if taken:
                        return self._grant(key, row)
                    continue
                if row["state"] != "queued":
                    error = self._error_of(row, admission.request_id)
                    if row["granted"] and not row["closed"]:  # cancelled after it got the slot
                        await self.finish(admission.request_id, admission.user_id, "cancelled")
                    raise error
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    await self._expire(key)
                    continue  # a grant that came with the deadline wins; else the error
                pause = self._poll_s * WAITER_POLLS
                await wait_for(event, pause if remaining is None else min(remaining, pause))
        except asyncio.CancelledError:
            await asyncio.shield(self._abandon(key))
            raise
        finally:
            if self._waiters.get(key) is event:
                del self._waiters[key]

    def _grant(self, key: tuple[str, str], row: Mapping[str, Any]) -> Grant:
        signal = self._signals.setdefault(key, LeaseSignal())
        self._held[key] = Held(row["lease_epoch"], row["host"] or "", signal)
        if row["state"] == "cancelled" or row["cancel_requested"]:
            signal.stop("cancelled", self._error_of(row, key[1]))
        return Grant(
            request_id=row["request_id"],
            user_id=row["user_id"],
            provider=row["provider"],
            backend=row["host"] or "",
            epoch=row["lease_epoch"],
            waited_s=max((row["started_at"] or row["enqueued_at"]) - row["enqueued_at"], 0.0),
            tried=tuple(row["tried"]),
            signal=signal,
        )

    async def _expire(self, key: tuple[str, str]) -> None:
        async with self._locked() as conn:
            row = await conn.fetchrow(
                "SELECT provider, enqueued_at FROM sched_requests"
                " WHERE user_id = $1 AND request_id = $2 AND state = 'queued' FOR UPDATE",
                *key,
            )
            if row is None:
                return
            waited = self._clock() - row["enqueued_at"]
            error = DeadlineExceeded(
                f"request {key[1]} waited {waited:.1f} s in the {row['provider']} queue "
                "without getting a slot (queue-wait deadline)"
            )
            await end_row(conn, key, "failed", self._clock(), error)
            await self._dispatch(conn)
        self._announce()

    async def _abandon(self, key: tuple[str, str]) -> None:
        """The waiting task was cancelled: the request ends as cancelled, its slot is freed."""
        row = await self._find_row(key[1], key[0])
        if row is None or row["closed"] or row["owner"] != self.replica_id:
            return
        if row["state"] == "queued":
            async with self._locked() as conn:
                await conn.execute(
                    _END + " AND state = 'queued'",
                    *key,
                    "cancelled",
                    self._clock(),
                    *error_columns(
                        RequestCancelled("the client went away while the request was queued")
                    ),
                    None,
                )
                await self._dispatch(conn)
            self._announce()
        elif row["granted"]:
            await self.finish(key[1], key[0], "cancelled")

    async def positions(
        self, admission: Admission, min_interval_s: float = 0.2
    ) -> AsyncIterator[Position]:
        key = (admission.user_id, admission.request_id)
        loop = asyncio.get_running_loop()
        last: int | None = None
        last_sent = -math.inf
        with self._board.watching(key):
            while True:
                generation = self._changed.generation
                event = self._changed.current()
                try:
                    figures = await self._board.look(key, generation)
                    if figures is MISSING:  # watched since the last shared read: read alone
                        figures = await self._own_figures(key)
                except CONNECTION_LOST:
                    # A database restart must not end a waiting request through its position
                    # reports: its acquire rides the outage out (and decides); look again.
                    await wait_for(event, self._poll_s)
                    continue
                if not isinstance(figures, tuple):
                    return  # no longer waiting
                at, wait = figures
                if at != last:
                    pause = last_sent + position_gap(min_interval_s, last or 0) - loop.time()
                    if pause > 0:
                        await wait_for(event, pause)  # then look again: send the latest
                        continue
                    last, last_sent = at, loop.time()
                    yield Position(at, wait)
                    continue
                await wait_for(event, self._poll_s)

    async def _own_figures(self, key: tuple[str, str]) -> tuple[int, float] | None:
        row = await self._find_row(key[1], key[0])
        if row is None or row["state"] != "queued":
            return None
        async with self._pool.acquire() as conn:
            info = await self._info(conn, row)
        return info.position, info.estimated_wait_s

    async def release(self, grant: Grant) -> None:
        key = (grant.user_id, grant.request_id)
        async with self._locked() as conn:
            row = await conn.fetchrow(
                "UPDATE sched_requests SET slot = NULL WHERE user_id = $1 AND request_id = $2"
                " AND lease_epoch = $3 AND NOT closed AND slot IS NOT NULL"
                " RETURNING state, started_at, provider",
                *key,
                grant.epoch,
            )
            if row is None:  # released already (nothing to do), or no longer ours (fenced)
                ours = await conn.fetchval(
                    "SELECT 1 FROM sched_requests WHERE user_id = $1 AND request_id = $2"
                    " AND lease_epoch = $3 AND NOT closed",
                    *key,
                    grant.epoch,
                )
                if not ours and key in self._held:
                    self._fence(key)
                return
            if row["state"] == "running" and row["started_at"] is not None:
                # Cut-short requests would drag the estimate down, so only full runs count.
                sample = self._clock() - row["started_at"]
                await record_samples(conn, row["provider"], "service", [sample])
            await self._dispatch(conn)
        self._announce()

    async def put_back(self, grant: Grant) -> None:
        key = (grant.user_id, grant.request_id)
        self._held.pop(key, None)
        grant.signal.rearm()
        async with self._locked() as conn:
            row = await conn.fetchrow(
                "SELECT state, provider, model, host, slot FROM sched_requests"
                " WHERE user_id = $1 AND request_id = $2 AND lease_epoch = $3 AND NOT closed"
                " FOR UPDATE",
                *key,
                grant.epoch,
            )
            if row is None or row["slot"] is None:
                return
            now = self._clock()
            hosts = self._hosts.get(row["provider"], [])
            serving = [h for h in hosts if h.serves(row["model"])]
            if row["state"] != "running":
                await end_row(conn, key, row["state"], now, None)
            elif self._closing is not None:
                await end_row(conn, key, "failed", now, ServiceUnavailable(self._closing))
            elif not any(h.up for h in serving):
                error = ServiceUnavailable(
                    none_up(row["provider"], serving, row["model"]),
                    retry_after_s=retry_hint(self._rules.down_retry_s),
                )
                await end_row(conn, key, "failed", now, error)
            else:
                await conn.execute(
                    "UPDATE sched_requests SET state = 'queued', granted = false, slot = NULL,"
                    " front = true, order_key = $3, tried = tried || host, host = NULL,"
                    " lease_epoch = NULL, lease_expires_at = NULL, started_at = NULL,"
                    " picked_up = false"  # waiting again: the waiter scan must see it end
                    " WHERE user_id = $1 AND request_id = $2",
                    *key,
                    now,
                )
            await self._dispatch(conn)
        self._announce()

    async def finish(
        self,
        request_id: str,
        user_id: str,
        outcome: Outcome,
        error: AgentError | None = None,
    ) -> None:
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {sorted(OUTCOMES)}, got {outcome!r}")
        key = (user_id, request_id)
        held = self._held.pop(key, None)
        self._signals.pop(key, None)
        async with self._locked() as conn:
            row = await conn.fetchrow(
                "SELECT state, closed, lease_epoch, owner, slot, started_at, provider,"
                " conversation_id FROM sched_requests"
                " WHERE user_id = $1 AND request_id = $2 FOR UPDATE",
                *key,
            )
            if row is None or row["closed"] or row["owner"] != self.replica_id:
                return  # ended already, or another replica's now (adopted): not ours to end
            # A turn whose slot went back at release frees only its conversation: a
            # dispatch is due only when a later turn of it waits (most turns: none).
            due = row["state"] == "queued" or row["slot"] is not None
            if not due and row["conversation_id"] is not None:
                due = await conn.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM sched_requests"
                    " WHERE conversation_id = $1 AND state = 'queued')",
                    row["conversation_id"],
                )
            now = self._clock()
            if row["state"] == "queued":
                error = error or RequestCancelled(
                    f"request {request_id} ended before it got a slot"
                )
                await end_row(conn, key, outcome, now, error)
            elif held is not None and row["lease_epoch"] != held.epoch:
                self._fence(key, held)
                return  # a newer grant is not ours to end
            else:
                if outcome == "completed" and row["slot"] is not None and row["started_at"]:
                    sample = now - row["started_at"]
                    await record_samples(conn, row["provider"], "service", [sample])
                if row["state"] == "running":
                    await end_row(conn, key, outcome, now, error)
                else:  # cancelled by its owner meanwhile: it stays cancelled
                    await conn.execute(
                        "UPDATE sched_requests SET closed = true, slot = NULL"
                        " WHERE user_id = $1 AND request_id = $2",
                        *key,
                    )
            if not due:
                return
            await self._dispatch(conn)
        self._announce()
