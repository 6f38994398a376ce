"""Positions and wait estimates of the shared queue, read from the rows.

A position is a rank: the waiting rows of the same provider that sort before
this one by (put back first, order key, submission sequence), counting only
rows some host serving this request's model could also run when the hosts
serve different models.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from service.scheduler.estimates import start_delay
from service.scheduler.pg_hosts import HostState


def _uniform(hosts: Sequence[HostState]) -> bool:
    return len(hosts) <= 1 or all(h.models is None for h in hosts)


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
    slots = sum(h.slots for h in serving)
    if slots == 0:
        return (at + 1) * mean
    started = await conn.fetch(
        "SELECT started_at FROM sched_requests WHERE provider = $1 AND slot IS NOT NULL"
        " AND host = ANY($2::text[])",
        provider,
        [h.name for h in serving],
    )
    elapsed = [now - r["started_at"] for r in started if r["started_at"] is not None]
    return start_delay(at, slots, elapsed, mean)


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
