"""Admission to the shared queue: every check and the insert in one transaction, under the lock.

The caps (``max_pending``, ``max_pending_per_user``, the user's ``max_active``)
are counted from the rows while the dispatch lock is held, so they hold exactly
across replicas; refusals carry the same errors and retry hints as the
in-process engine.

The order key (static, computed here once)::

    vstart    = max(now, the user's previous vstart + aging_interval_s)
    order_key = vstart + (priority - 1) * aging_interval_s

A user's burst is spread one aging interval apart (fairness between users),
one priority level is worth one aging interval (so a request that has waited
k intervals ranks with one k levels more urgent submitted now: aging), and
ties go by submission sequence. A request put back after a host failure goes
ahead of all of these (``front``).

Two refinements keep the README's rules true for one user's own requests
(``_rekey``, in the same transaction, touching only that user's rows):

- the user's waiting requests share out the user's vstarts in the order
  (priority, submission), so a user's urgent request goes ahead of the same
  user's less urgent ones, as in the in-process queue;
- a turn's key is never below the key of an earlier waiting turn of its
  conversation (ties go by sequence, so after it): the turn cannot start
  before that one, and its position, counted from the keys, says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from service.errors import (
    AgentError,
    Code,
    InvalidRequest,
    LimitReached,
    QueueFull,
    ServiceUnavailable,
)
from service.scheduler.admission import check_request, retry_hint
from service.scheduler.hosts import Host
from service.scheduler.interface import NO_SLOT, RequestSpec
from service.scheduler.pg_estimates import any_turnover, user_turnover
from service.scheduler.pg_hosts import HostState, load_hosts


@dataclass(frozen=True, slots=True)
class Rules:
    """The admission settings every replica shares (from the same configuration)."""

    max_pending: int
    max_pending_per_user: int
    aging_interval_s: float
    default_service_s: float
    down_retry_s: float
    retention_s: float


def check_model(provider: str, hosts: Sequence[HostState], model: str, down_retry_s: float) -> None:
    """InvalidRequest for a model no host serves; UNAVAILABLE when none serving it is up."""
    if not model:
        return
    serving = [h for h in hosts if h.serves(model)]
    if not serving:
        names: set[str] = set()
        for h in hosts:
            names.update(h.models or ())
        raise InvalidRequest(
            f"model {model!r} is not served by any {provider} host here; "
            f"served models: {', '.join(sorted(names))}"
        )
    if not any(h.up for h in serving):
        raise ServiceUnavailable(none_up(provider, serving, model), retry_after_s=down_retry_s)


def none_up(provider: str, serving: Sequence[HostState], model: str) -> str:
    down = "; ".join(f"{h.name} ({h.last_error or 'down'})" for h in serving)
    return f"no {provider} host that serves model {model!r} is up: {down}"


async def admit(
    conn: Any,
    spec: RequestSpec,
    *,
    pools: Mapping[str, Sequence[Host]],
    rules: Rules,
    owner: str,
    now: float,
) -> tuple[Mapping[str, Any], dict[str, list[HostState]]]:
    """Check and insert one request (the caller holds the lock): its row, and the hosts read.

    Every statement here runs under the queue's one lock, so each round trip saved is
    admissions per second for the whole service.
    """
    if not spec.user_id:
        raise InvalidRequest("user_id must not be empty")
    check_request(priority=spec.priority, request_id=spec.request_id)
    if spec.provider != NO_SLOT and spec.provider not in pools:
        known = ", ".join(sorted(pools))
        raise InvalidRequest(f"unknown provider {spec.provider!r}; configured: {known}")
    hosts = await load_hosts(conn, pools)
    check_model(spec.provider, hosts.get(spec.provider, ()), spec.model, rules.down_retry_s)
    # One round trip: an ended request past its retention frees its id even before the
    # periodic prune (a data-modifying WITH runs whether or not it is read; the reads do
    # not see its delete, so they leave such a row out themselves), then whether the id
    # is taken, and the user's open requests.
    found = await conn.fetchrow(
        "WITH expired AS (DELETE FROM sched_requests WHERE user_id = $1 AND request_id = $2"
        " AND closed AND finished_at <= $3)"
        " SELECT EXISTS (SELECT 1 FROM sched_requests WHERE user_id = $1 AND request_id = $2"
        "  AND NOT (closed AND finished_at <= $3)) AS taken,"
        " (SELECT count(*) FROM sched_requests WHERE user_id = $1 AND NOT closed) AS active",
        spec.user_id,
        spec.request_id,
        now - rules.retention_s,
    )
    if found["taken"]:
        raise AgentError(
            f"request_id {spec.request_id!r} is already in use", code=Code.ALREADY_EXISTS
        )
    active = found["active"]
    if spec.max_active and active >= spec.max_active:
        wait = await user_turnover(conn, spec.user_id, hosts, now, rules.default_service_s)
        raise LimitReached(
            f"user {spec.user_id!r} already has {active} requests waiting or running, the "
            f"limit (max_active={spec.max_active}); retry when one has finished",
            retry_after_s=retry_hint(wait),
            limit="max_active",
        )
    if await _will_wait(conn, spec, hosts.get(spec.provider, ())):
        await _check_caps(conn, spec.user_id, hosts, rules, now)
    if spec.provider == NO_SLOT:
        vstart = now  # a command takes no slot: it waits only for its conversation
    else:
        vstart = await conn.fetchval(
            "INSERT INTO sched_users AS u (user_id, vstart) VALUES ($1, $2)"
            " ON CONFLICT (user_id) DO UPDATE SET vstart = GREATEST($2, u.vstart + $3)"
            " RETURNING vstart",
            spec.user_id,
            now,
            rules.aging_interval_s,
        )
    row: Mapping[str, Any] = await conn.fetchrow(
        "INSERT INTO sched_requests (user_id, request_id, owner, state, priority, order_key,"
        " conversation_id, provider, model, enqueued_at, payload, vstart)"
        " VALUES ($1, $2, $3, 'queued', $4, $5, $6, $7, $8, $9, $10, $11) RETURNING *",
        spec.user_id,
        spec.request_id,
        owner,
        spec.priority,
        vstart + (spec.priority - 1) * rules.aging_interval_s,
        spec.conversation_id,
        spec.provider,
        spec.model,
        now,
        spec.payload,
        vstart,
    )
    if spec.provider != NO_SLOT and await _rekey(
        conn, spec.user_id, spec.provider, rules.aging_interval_s
    ):
        row = await conn.fetchrow(
            "SELECT * FROM sched_requests WHERE user_id = $1 AND request_id = $2",
            spec.user_id,
            spec.request_id,
        )
    return row, hosts


async def _rekey(conn: Any, user_id: str, provider: str, interval: float) -> bool:
    """Key one user's waiting requests of a provider by (priority, submission); True if any moved.

    The user's vstarts stay the same set; they are shared out again so the most
    urgent request holds the earliest one. Then each conversation's turns are
    kept in order: a turn's key is at least the key of the turn before it.
    Rows put back (``front``) keep theirs.
    """
    rows = await conn.fetch(
        "SELECT request_id, priority, seq, order_key, vstart, conversation_id"
        " FROM sched_requests WHERE user_id = $1 AND provider = $2 AND state = 'queued'"
        " AND NOT front ORDER BY seq",
        user_id,
        provider,
    )
    if len(rows) < 2:
        return False
    starts = sorted(
        r["vstart"] if r["vstart"] is not None else r["order_key"] - (r["priority"] - 1) * interval
        for r in rows
    )
    urgent_first = sorted(rows, key=lambda r: (r["priority"], r["seq"]))
    slot = {r["request_id"]: start for r, start in zip(urgent_first, starts, strict=True)}
    last: dict[str, float] = {}  # conversation → key of its latest waiting turn so far
    changed: list[tuple[str, str, float, float]] = []
    for r in rows:  # by sequence: a conversation's earlier turns are keyed first
        start = slot[r["request_id"]]
        key = start + (r["priority"] - 1) * interval
        conversation = r["conversation_id"]
        if conversation is not None:
            key = max(key, last.get(conversation, key))
            last[conversation] = key
        if key != r["order_key"] or start != r["vstart"]:
            changed.append((user_id, r["request_id"], key, start))
    if changed:
        await conn.executemany(
            "UPDATE sched_requests SET order_key = $3, vstart = $4"
            " WHERE user_id = $1 AND request_id = $2",
            changed,
        )
    return bool(changed)


async def _will_wait(conn: Any, spec: RequestSpec, hosts: Sequence[HostState]) -> bool:
    """Whether the request would queue: a turn of its conversation is open, or no slot is free.

    A request that gets a slot at once never waits, so only queued ones meet the caps.
    """
    if spec.conversation_id and await conn.fetchval(
        "SELECT 1 FROM sched_requests WHERE conversation_id = $1 AND NOT closed LIMIT 1",
        spec.conversation_id,
    ):
        return True
    if spec.provider == NO_SLOT:
        return False
    used = {
        r["host"]: r["n"]
        for r in await conn.fetch(
            "SELECT host, count(*) AS n FROM sched_requests"
            " WHERE provider = $1 AND slot IS NOT NULL GROUP BY host",
            spec.provider,
        )
    }
    return not any(h.up and h.serves(spec.model) and used.get(h.name, 0) < h.slots for h in hosts)


async def _check_caps(
    conn: Any,
    user_id: str,
    hosts: Mapping[str, Sequence[HostState]],
    rules: Rules,
    now: float,
) -> None:
    # The total from the triggers' counter; the user's own from the index of open rows.
    row = await conn.fetchrow(
        "SELECT (SELECT waiting FROM sched_counts) AS total,"
        " (SELECT count(*) FROM sched_requests WHERE user_id = $1 AND NOT closed"
        "  AND state = 'queued') AS mine",
        user_id,
    )
    mine, total = row["mine"], row["total"]
    if mine >= rules.max_pending_per_user:
        wait = await user_turnover(conn, user_id, hosts, now, rules.default_service_s)
        raise QueueFull(
            f"user {user_id!r} already has {mine} requests waiting, the per-user limit "
            f"(max_pending_per_user={rules.max_pending_per_user}); retry when one has started",
            retry_after_s=retry_hint(wait),
            cap="max_pending_per_user",
        )
    if total >= rules.max_pending:
        wait = await any_turnover(conn, hosts, now, rules.default_service_s)
        raise QueueFull(
            f"the service queue is full: {total} requests are waiting, the "
            f"service-wide limit (max_pending={rules.max_pending})",
            retry_after_s=retry_hint(wait),
            cap="max_pending",
        )
