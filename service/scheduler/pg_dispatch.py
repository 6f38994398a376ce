"""Dispatch of the shared queue: one short transaction under the advisory lock.

Any replica runs it when woken (a submit, release, finish, cancel, a host
report, a NOTIFY from another replica, the safety poll). It first rescues
the rows of silent replicas (leases expired on the database clock), then
hands numbered free slots to the eligible queued rows in order. Slots are
counted from the rows that hold one, read under the lock, and the partial
unique index on (provider, host, slot) refuses a double grant even if this
code were wrong; no ``COUNT`` under ``SKIP LOCKED``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from service.scheduler.hosts import Host
from service.scheduler.interface import NO_SLOT
from service.scheduler.pg_admission import none_up
from service.scheduler.pg_hosts import HostState, choose, load_hosts

RESCUE_RETRY_S = 1.0
# Appended to a restarted replica's id: its predecessor's rows, waiting for adoption.
ORPHAN_SUFFIX = "~before-restart"
_LOST = (
    "the service replica running this request stopped renewing its lease "
    "(it died or froze); retry the request"
)
_GONE = "the service replica holding this request stopped answering; retry the request"


@dataclass
class Dispatched:
    """What one dispatch did and saw (the caller keeps the host view for ``hosts()``)."""

    granted: int = 0
    rescued: int = 0
    hosts: dict[str, list[HostState]] = field(default_factory=dict)
    running: dict[tuple[str, str], int] = field(default_factory=dict)  # (provider, host) → slots
    started: set[tuple[str, str]] = field(default_factory=set)  # (user, request) granted now

    @property
    def changed(self) -> bool:
        return bool(self.granted or self.rescued)


async def lock(conn: Any, key: int) -> None:
    """Serialize with every other admission and dispatch (its own statement: see DESIGN §9).

    ``key`` is the queue's (``pg_schema.scope``).
    """
    await conn.execute("SELECT pg_advisory_xact_lock($1)", key)


async def rescue(conn: Any, now: float) -> int:
    """End the rows of replicas whose leases expired on the database's clock.

    A grant is rescued only when its lease has expired *and* its replica's
    heartbeat has: a live replica whose renewal waited for the dispatch lock
    keeps what it holds.

    A grant its replica took (``picked_up``, set when ``acquire`` returns it)
    counts as started at the provider, so when rescued it ends failed with a
    retry hint and never runs twice; one its replica never took waits again.
    Waiting rows of a replica that went away wait for a live replica
    to adopt them (``adopt``) when they carry a payload; without one they end
    failed (only the replica that accepted them could run them).
    """
    # A grant its replica never took upstream (it died first) never reached the
    # provider: the request waits again, first in line, for a live replica to adopt it.
    unused = await conn.execute(
        "UPDATE sched_requests SET state = 'queued', granted = false, slot = NULL,"
        " host = NULL, front = true, lease_epoch = NULL, lease_expires_at = NULL,"
        " started_at = NULL"
        " WHERE granted AND NOT closed AND NOT picked_up AND state = 'running'"
        " AND payload <> '' AND NOT cancel_requested AND lease_expires_at < now()"
        " AND NOT sched_beating(owner)"
    )
    lost = await conn.execute(
        "UPDATE sched_requests SET"
        " error_kind = CASE WHEN state = 'running' THEN 'ServiceUnavailable' ELSE error_kind END,"
        " error_code = CASE WHEN state = 'running' THEN 'UNAVAILABLE' ELSE error_code END,"
        " error_message = CASE WHEN state = 'running' THEN $2 ELSE error_message END,"
        " retry_after_s = CASE WHEN state = 'running' THEN $3 ELSE retry_after_s END,"
        " state = CASE WHEN state = 'running' THEN 'failed' ELSE state END,"
        " closed = true, slot = NULL, finished_at = COALESCE(finished_at, $1)"
        " WHERE granted AND NOT closed AND lease_expires_at < now()"
        " AND NOT sched_beating(owner)",
        now,
        _LOST,
        RESCUE_RETRY_S,
    )
    # A waiting request with its payload waits to be adopted by a live replica instead.
    gone = await conn.execute(
        "UPDATE sched_requests SET state = 'failed', closed = true, finished_at = $1,"
        " error_kind = 'ServiceUnavailable', error_code = 'UNAVAILABLE', error_message = $2,"
        " retry_after_s = $3"
        " WHERE state = 'queued' AND payload = '' AND NOT sched_live(owner)",
        now,
        _GONE,
        RESCUE_RETRY_S,
    )
    await conn.execute("DELETE FROM sched_replicas WHERE expires_at < now() - interval '1 hour'")
    return _count(unused) + _count(lost) + _count(gone)


async def forget_replica(conn: Any, replica_id: str, now: float) -> int:
    """Close what an earlier process that used this replica id left open.

    A restarted replica (the same host name and pid 1 in a container) cannot
    run what its predecessor had started: those rows end failed with a retry
    hint, never run twice. Its waiting requests that carry a payload were
    accepted and must not be lost: they are handed over like a dead replica's
    (owner renamed to a replica that never answers), so a live replica, this
    one included, adopts them. A grant the predecessor never took upstream
    waits again, first in line. Waiting rows without a payload end failed, as
    nobody else can run them. The predecessor's heartbeat no longer keeps
    anything alive.
    """
    orphan = f"{replica_id}{ORPHAN_SUFFIX}"
    handed = await conn.execute(
        "UPDATE sched_requests SET owner = $2, state = 'queued', granted = false,"
        " slot = NULL, host = NULL, front = front OR state = 'running', lease_epoch = NULL,"
        " lease_expires_at = NULL, started_at = NULL"
        " WHERE owner = $1 AND NOT closed AND payload <> '' AND NOT cancel_requested"
        " AND (state = 'queued' OR (state = 'running' AND NOT picked_up))",
        replica_id,
        orphan,
    )
    status = await conn.execute(
        "UPDATE sched_requests SET"
        " state = CASE WHEN state IN ('queued', 'running') THEN 'failed' ELSE state END,"
        " error_kind = CASE WHEN state IN ('queued', 'running') THEN 'ServiceUnavailable'"
        "  ELSE error_kind END,"
        " error_code = CASE WHEN state IN ('queued', 'running') THEN 'UNAVAILABLE'"
        "  ELSE error_code END,"
        " error_message = CASE WHEN state IN ('queued', 'running') THEN $3"
        "  ELSE error_message END,"
        " retry_after_s = CASE WHEN state IN ('queued', 'running') THEN $4"
        "  ELSE retry_after_s END,"
        " closed = true, slot = NULL, finished_at = COALESCE(finished_at, $2)"
        " WHERE owner = $1 AND NOT closed",
        replica_id,
        now,
        _GONE,
        RESCUE_RETRY_S,
    )
    return _count(handed) + _count(status)


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


async def dispatch(
    conn: Any,
    pools: Mapping[str, Sequence[Host]],
    *,
    lease_s: float,
    now: float,
    retention_s: float,
    down_retry_s: float,
    aging_interval_s: float,
    housekeeping: bool = True,
    every_lane: bool = False,
    hosts: dict[str, list[HostState]] | None = None,
) -> Dispatched:
    """Grant free slots in order; first, with ``housekeeping``, rescue and prune.

    Call inside a transaction after ``lock``. Housekeeping is a few statements
    that only the periodic rounds need (leases expire on their own schedule).
    Only lanes with a free slot or a host down are read, unless ``every_lane``
    (housekeeping rounds, a change of a host): then the waiting requests that
    no host serves any more are failed in full lanes too.
    """
    done = Dispatched()
    if housekeeping:
        done.rescued = await rescue(conn, now)
        await conn.execute(
            "DELETE FROM sched_requests WHERE closed AND finished_at <= $1", now - retention_s
        )
        # A user's virtual start an interval old no longer moves their next one (max(now, ...)).
        await conn.execute("DELETE FROM sched_users WHERE vstart <= $1", now - aging_interval_s)
    # ``hosts``: read already in this transaction (an admission's), under the same lock.
    done.hosts = hosts if hosts is not None else await load_hosts(conn, pools)
    taken: dict[tuple[str, str], set[int]] = {}
    for r in await conn.fetch(
        "SELECT provider, host, slot FROM sched_requests WHERE slot IS NOT NULL"
    ):
        taken.setdefault((r["provider"], r["host"]), set()).add(r["slot"])
    done.running = {key: len(slots) for key, slots in taken.items()}
    # Only the lanes that can start a request now need their queue read, and those with
    # a host down (their waiting requests may have no host left); the commands' lane
    # always. A full pool's thousand waiting requests cost nothing to each dispatch.
    lanes = [NO_SLOT] + [
        provider
        for provider, states in done.hosts.items()
        if every_lane
        or housekeeping
        or any(not h.up or len(taken.get((provider, h.name), ())) < h.slots for h in states)
    ]
    # A lane with a free slot reads its first waiting rows, enough for its free slots when
    # few are skipped (a conversation's later turn, a model its free hosts do not serve);
    # only when those run out before the slots do is the whole queue read.
    free = {
        provider: sum(
            max(h.slots - len(taken.get((provider, h.name), ())), 0) for h in states if h.up
        )
        for provider, states in done.hosts.items()
    }
    limit = None if every_lane or housekeeping else _PAGE + 4 * sum(free.values())
    rows = {lane: await _waiting(conn, lane, limit) for lane in sorted(set(lanes))}
    plan = await _plan(conn, _in_order(rows), done.hosts, taken, now)
    # A lane read in part whose free slots its rows could not fill is read in full (the
    # commands' lane when it was cut at all); then the plan is made again.
    slotted = {lane: 0 for lane in rows}
    for grant in plan.grants:
        slotted[grant[4]] += 1
    short = [
        lane
        for lane, found in rows.items()
        if limit is not None
        and len(found) == limit
        and (lane == NO_SLOT or slotted[lane] < free.get(lane, 0))
    ]
    if short:
        for lane in short:
            rows[lane] = await _waiting(conn, lane, None)
        plan = await _plan(conn, _in_order(rows), done.hosts, taken, now)
    if not any(rows.values()):
        return done
    grants, unserved, waits, taken = plan.grants, plan.unserved, plan.waits, plan.taken
    done.started = {(g[0], g[1]) for g in grants}
    if grants:
        await conn.execute(
            "UPDATE sched_requests r SET state = 'running', granted = true, front = false,"
            " picked_up = false,"
            " host = g.host, slot = g.slot, lease_epoch = nextval('sched_epoch'),"
            " lease_expires_at = now() + make_interval(secs => $5), started_at = $6"
            " FROM unnest($1::text[], $2::text[], $3::text[], $4::int[])"
            "  AS g(user_id, request_id, host, slot)"
            " WHERE r.user_id = g.user_id AND r.request_id = g.request_id",
            [g[0] for g in grants],
            [g[1] for g in grants],
            [g[2] for g in grants],
            [g[3] for g in grants],
            lease_s,
            now,
        )
        for (lane, name), numbers in taken.items():
            done.running[(lane, name)] = len(numbers)
        for provider, samples in waits.items():
            await record_samples(conn, provider, "wait", samples)
    if unserved:
        await conn.executemany(
            "UPDATE sched_requests SET state = 'failed', closed = true, finished_at = $4,"
            " error_kind = 'ServiceUnavailable', error_code = 'UNAVAILABLE', error_message = $3,"
            " retry_after_s = $5 WHERE user_id = $1 AND request_id = $2 AND state = 'queued'",
            [(u, r, m, now, down_retry_s) for u, r, m in unserved],
        )
        done.rescued += len(unserved)
    done.granted = len(grants)
    return done


_PAGE = 32  # waiting rows a dispatch reads beyond four per free slot


async def _waiting(conn: Any, lane: str, limit: int | None) -> list[Any]:
    """The first ``limit`` waiting rows of ``lane`` in order (None: all of them).

    One lane a query, so that PostgreSQL reads the rows in the order of the
    ``sched_waiting`` index and stops at ``limit`` (``provider = ANY(...)`` made
    it read and sort every waiting row first). A row whose replica went away
    waits for adoption: a grant would go to no one.
    """
    return list(
        await conn.fetch(
            "SELECT user_id, request_id, provider, model, conversation_id, seq, tried,"
            " enqueued_at FROM sched_requests WHERE state = 'queued' AND provider = $1"
            " AND sched_live(owner) ORDER BY front DESC, order_key, seq LIMIT $2",
            lane,
            limit,
        )
    )


def _in_order(rows: Mapping[str, Sequence[Any]]) -> list[Any]:
    """Every lane's rows, lane by lane (as one ``ORDER BY provider, …`` gave them)."""
    return [row for lane in sorted(rows) for row in rows[lane]]


@dataclass
class _Plan:
    grants: list[tuple[str, str, str, int | None, str]]  # user, request, host, slot, lane
    unserved: list[tuple[str, str, str]]
    waits: dict[str, list[float]]
    taken: dict[tuple[str, str], set[int]]  # the slots in use after the grants


async def _plan(
    conn: Any,
    queued: Sequence[Any],
    hosts: Mapping[str, Sequence[HostState]],
    taken_before: Mapping[tuple[str, str], set[int]],
    now: float,
) -> _Plan:
    """Which of ``queued`` (in order) get which free slots, and which no host serves."""
    taken = {key: set(slots) for key, slots in taken_before.items()}
    # Per open conversation: its earliest open turn, and whether a turn holds it now.
    first_turn: dict[str, int] = {}
    held: set[str] = set()
    conversations = list({r["conversation_id"] for r in queued} - {None})
    turns = (
        await conn.fetch(
            "SELECT conversation_id, min(seq) AS first, bool_or(granted) AS held"
            " FROM sched_requests WHERE NOT closed AND conversation_id = ANY($1::text[])"
            " GROUP BY conversation_id",
            conversations,
        )
        if conversations
        else []
    )
    for r in turns:
        first_turn[r["conversation_id"]] = r["first"]
        if r["held"]:
            held.add(r["conversation_id"])
    plan = _Plan([], [], {}, taken)
    for r in queued:
        conversation = r["conversation_id"]
        if conversation is not None and (
            conversation in held or first_turn.get(conversation) != r["seq"]
        ):
            continue
        provider = r["provider"]
        host_name, slot = "", None
        pool = hosts.get(provider, ())
        if provider != NO_SLOT and not any(h.up and h.serves(r["model"]) for h in pool):
            # Its hosts went down after it was admitted: it would wait for nothing.
            serving = [h for h in pool if h.serves(r["model"])]
            plan.unserved.append(
                (r["user_id"], r["request_id"], none_up(provider, serving, r["model"]))
            )
            continue
        if provider != NO_SLOT:
            free = [
                (h, len(taken.get((provider, h.name), ())))
                for h in pool
                if h.up and len(taken.get((provider, h.name), ())) < h.slots
            ]
            host = choose(free, r["model"], r["tried"])
            if host is None:
                continue
            used = taken.setdefault((provider, host.name), set())
            slot = min(set(range(host.slots)) - used)
            used.add(slot)
            host_name = host.name
            plan.waits.setdefault(provider, []).append(now - r["enqueued_at"])
        if conversation is not None:
            held.add(conversation)
        plan.grants.append((r["user_id"], r["request_id"], host_name, slot, provider))
    return plan


async def record_samples(conn: Any, provider: str, kind: str, samples: Sequence[float]) -> None:
    """Fold timings into the provider's moving average (weight 0.2; the first sample sets it)."""
    avg, count = (
        ("avg_wait_s", "wait_samples")
        if kind == "wait"
        else (
            "avg_service_s",
            "service_samples",
        )
    )
    for sample in samples:
        await conn.execute(
            f"UPDATE sched_lanes SET {avg} = CASE WHEN {count} = 0 THEN $2"  # noqa: S608
            f" ELSE {avg} + 0.2 * ($2 - {avg}) END, {count} = {count} + 1 WHERE provider = $1",
            provider,
            max(sample, 0.0),
        )
