"""Positions and wait estimates of the shared queue, read from the rows.

A position is a rank: the waiting rows of the same provider that sort before
this one by (put back first, order key, submission sequence), counting only
rows some host serving this request's model could also run when the hosts
serve different models.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from service.scheduler.estimates import FreeSlots
from service.scheduler.pg_hosts import HostState


def _uniform(hosts: Sequence[HostState]) -> bool:
    """Every host serves the same models: every waiting request competes with every other."""
    return len(hosts) <= 1 or len({h.models for h in hosts}) == 1


async def position(conn: Any, row: Mapping[str, Any], hosts: Sequence[HostState]) -> int:
    """Waiting rows that will be offered a slot before ``row`` (which must be queued)."""
    ahead_sql = (
        "FROM sched_requests WHERE state = 'queued' AND provider = $1"
        " AND ((NOT front)::int, order_key, seq) < ($2, $3, $4)"
    )
    args = (row["provider"], 0 if row["front"] else 1, row["order_key"], row["seq"])
    if _uniform(hosts):
        return int(await conn.fetchval(f"SELECT count(*) {ahead_sql}", *args))
    mine = {h.name for h in hosts if h.serves(row["model"])}
    models = await conn.fetch(f"SELECT model {ahead_sql}", *args)
    return sum(1 for r in models if any(h.name in mine for h in hosts if h.serves(r["model"])))


async def estimate_wait(
    conn: Any,
    provider: str,
    model: str,
    at: int,
    hosts: Sequence[HostState],
    now: float,
    default_service_s: float,
) -> float:
    """Seconds until the request at position ``at`` starts, on the healthy hosts of its model."""
    serving = [h for h in hosts if h.up and h.serves(model)]
    service = await conn.fetchval(
        "SELECT avg_service_s FROM sched_lanes WHERE provider = $1", provider
    )
    mean = float(service) if service is not None else default_service_s
    if not any(h.slots for h in serving):
        return (at + 1) * mean
    started = await conn.fetch(
        "SELECT host, started_at FROM sched_requests WHERE provider = $1 AND slot IS NOT NULL"
        " AND host = ANY($2::text[])",
        provider,
        [h.name for h in serving],
    )
    return _lane(serving, mean, started, now)(at)


def _lane(
    serving: Sequence[HostState], mean: float, started: Sequence[Mapping[str, Any]], now: float
) -> Callable[[int], float]:
    """Position -> estimated wait on the ``serving`` hosts."""
    slots = sum(h.slots for h in serving)
    if slots == 0:
        return lambda at: (at + 1) * mean
    names = {h.name for h in serving}
    elapsed = [
        now - r["started_at"] for r in started if r["started_at"] is not None and r["host"] in names
    ]
    return FreeSlots(slots, elapsed, mean).delay


async def user_turnover(
    conn: Any,
    user_id: str,
    hosts: Mapping[str, Sequence[HostState]],
    now: float,
    default_service_s: float,
) -> float:
    """Roughly how soon the first of this user's waiting requests starts."""
    rows = await conn.fetch(
        "SELECT provider, model, front, order_key, seq FROM sched_requests"
        " WHERE state = 'queued' AND user_id = $1",
        user_id,
    )
    best: float | None = None
    for row in rows:
        pool = hosts.get(row["provider"], ())
        at = await position(conn, row, pool)
        wait = await estimate_wait(
            conn, row["provider"], row["model"], at, pool, now, default_service_s
        )
        best = wait if best is None else min(best, wait)
    if best is None:
        return await any_turnover(conn, hosts, now, default_service_s)
    return best


async def any_turnover(
    conn: Any, hosts: Mapping[str, Sequence[HostState]], now: float, default_service_s: float
) -> float:
    """Roughly how soon some waiting request starts, freeing a place in the queue."""
    busy = await conn.fetch("SELECT DISTINCT provider FROM sched_requests WHERE state = 'queued'")
    waits = [
        await estimate_wait(
            conn, r["provider"], "", 0, hosts.get(r["provider"], ()), now, default_service_s
        )
        for r in busy
    ]
    return min(waits, default=0.0)


# The rank of every waiting row in its provider's order (the order of ``position``:
# put back first, then order key, then submission), for the requested keys only.
_RANKS = (
    "SELECT w.* FROM ("
    " SELECT user_id, request_id, provider, model, front, order_key, seq,"
    "  row_number() OVER (PARTITION BY provider ORDER BY front DESC, order_key, seq) - 1 AS rank"
    " FROM sched_requests WHERE state = 'queued') w"
    " JOIN unnest($1::text[], $2::text[]) AS k(u, q) ON w.user_id = k.u AND w.request_id = k.q"
)


async def board(
    conn: Any,
    keys: Sequence[tuple[str, str]],
    hosts: Mapping[str, Sequence[HostState]],
    now: float,
    default_service_s: float,
) -> dict[tuple[str, str], tuple[int, float]]:
    """Position and estimated wait of each of ``keys`` that is waiting, in three queries
    (and one more per provider whose hosts serve different models).

    The same figures as ``position`` + ``estimate_wait`` row by row, which cost
    a count over the queue per waiting request: with W requests waiting, one
    change of the queue cost W counts of up to W rows; this sorts it once.
    """
    if not keys:
        return {}
    rows = await conn.fetch(_RANKS, [k[0] for k in keys], [k[1] for k in keys])
    if not rows:
        return {}
    means = {
        r["provider"]: float(r["avg_service_s"])
        for r in await conn.fetch("SELECT provider, avg_service_s FROM sched_lanes")
    }
    started: dict[str, list[Any]] = {}
    for r in await conn.fetch(
        "SELECT provider, host, started_at FROM sched_requests WHERE slot IS NOT NULL"
    ):
        started.setdefault(r["provider"], []).append(r)
    found: dict[tuple[str, str], tuple[int, float]] = {}
    lanes: dict[tuple[str, str], Callable[[int], float]] = {}
    # Hosts serving different models: a request ranks among the rows they could also run.
    shared: dict[tuple[str, str], int] = {}
    for provider in {r["provider"] for r in rows}:
        pool = hosts.get(provider, ())
        if not _uniform(pool):
            wanted = {(r["user_id"], r["request_id"]) for r in rows if r["provider"] == provider}
            shared.update(await _ranks_on_shared_hosts(conn, provider, pool, wanted))
    for row in rows:
        provider, model = row["provider"], row["model"]
        pool = hosts.get(provider, ())
        key = (row["user_id"], row["request_id"])
        at = shared[key] if key in shared else int(row["rank"])
        lane = lanes.get((provider, model))
        if lane is None:
            serving = [h for h in pool if h.up and h.serves(model)]
            mean = means.get(provider, default_service_s)
            lane = lanes[(provider, model)] = _lane(serving, mean, started.get(provider, ()), now)
        found[key] = (at, lane(at))
    return found


async def _ranks_on_shared_hosts(
    conn: Any, provider: str, pool: Sequence[HostState], wanted: set[tuple[str, str]]
) -> dict[tuple[str, str], int]:
    """``position`` of each wanted row, from one pass over the provider's waiting rows.

    The rows ahead are counted by the set of hosts that serve them: a row ahead
    counts when one of those hosts also serves the wanted row's model.
    """
    rows = await conn.fetch(
        "SELECT user_id, request_id, model FROM sched_requests"
        " WHERE state = 'queued' AND provider = $1 ORDER BY front DESC, order_key, seq",
        provider,
    )
    serving: dict[str, frozenset[str]] = {}
    ahead: dict[frozenset[str], int] = {}
    out: dict[tuple[str, str], int] = {}
    for r in rows:
        mine = serving.get(r["model"])
        if mine is None:
            mine = serving[r["model"]] = frozenset(h.name for h in pool if h.serves(r["model"]))
        key = (r["user_id"], r["request_id"])
        if key in wanted:
            out[key] = sum(n for hosts, n in ahead.items() if hosts & mine)
        ahead[mine] = ahead.get(mine, 0) + 1
    return out
