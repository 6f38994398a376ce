"""The hosts of the shared queue: slots from the configuration, health from the table.

Every replica is built with the same ``slots`` / ``hosts`` configuration, so
how many slots a host has is known locally; whether it is up, the models it
serves and its last error are rows of ``sched_hosts`` written by the health
checks of any replica, so all replicas dispatch to the same healthy hosts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from service.scheduler.hosts import Host, HostView, model_aliases


@dataclass(frozen=True, slots=True)
class HostState:
    """One host as the table says it is, with its configured slots."""

    provider: str
    name: str
    slots: int
    up: bool
    since: float
    last_error: str
    models: frozenset[str] | None
    loaded: frozenset[str]

    def serves(self, model: str) -> bool:
        return self.models is None or not model or model in model_aliases(self.models)

    def has_loaded(self, model: str) -> bool:
        return bool(model) and bool(self.loaded & model_aliases((model,)))

    def view(self, running: int) -> HostView:
        return HostView(
            name=self.name,
            slots=self.slots,
            up=self.up,
            running=running,
            models=self.models,
            loaded=self.loaded,
            last_error=self.last_error,
            since=self.since,
        )


def topology(
    slots: Mapping[str, int], hosts: Mapping[str, Sequence[Host]] | None
) -> dict[str, tuple[Host, ...]]:
    """Each provider's configured hosts; a provider without a pool has one anonymous host."""
    pools = {name: tuple(pool) for name, pool in (hosts or {}).items()}
    if not slots and not pools:
        raise ValueError("at least one provider needs slots")
    if any(n < 1 for n in slots.values()):
        raise ValueError("every provider needs at least one slot")
    for name, n in slots.items():
        pools.setdefault(name, (Host("", n),))
    for name, pool in pools.items():
        if not pool:
            raise ValueError(f"provider {name!r} needs at least one host")
        if len({h.name for h in pool}) != len(pool):
            raise ValueError(f"provider {name!r} has two hosts of the same name")
    return pools


async def seed_hosts(conn: Any, pools: Mapping[str, Sequence[Host]], now: float) -> None:
    """Rows for configured hosts not yet in the table (a host is up until checked)."""
    await conn.executemany(
        "INSERT INTO sched_hosts (provider, name, up, since, models) VALUES ($1, $2, true, $3, $4)"
        " ON CONFLICT (provider, name) DO NOTHING",
        [
            (provider, h.name, now, sorted(h.models) if h.models is not None else None)
            for provider, pool in pools.items()
            for h in pool
        ],
    )


async def load_hosts(conn: Any, pools: Mapping[str, Sequence[Host]]) -> dict[str, list[HostState]]:
    """The configured hosts of every provider, in configuration order, as the table has them."""
    rows = await conn.fetch(
        "SELECT provider, name, up, since, last_error, models, loaded FROM sched_hosts"
    )
    found = {(r["provider"], r["name"]): r for r in rows}
    out: dict[str, list[HostState]] = {}
    for provider, pool in pools.items():
        states = out[provider] = []
        for h in pool:
            r = found.get((provider, h.name))
            if r is None:  # not seeded yet by any replica: as configured
                state = HostState(provider, h.name, h.slots, True, 0.0, "", h.models, h.loaded)
                states.append(state)
                continue
            models = frozenset(r["models"]) if r["models"] is not None else None
            states.append(
                HostState(
                    provider,
                    h.name,
                    h.slots,
                    r["up"],
                    r["since"],
                    r["last_error"],
                    models,
                    frozenset(r["loaded"]),
                )
            )
    return out


async def write_host(
    conn: Any,
    provider: str,
    name: str,
    *,
    up: bool,
    error: str,
    loaded: Iterable[str] | None,
    models: Iterable[str] | None,
    now: float,
) -> bool:
    """Record a health report; True when it changes what the host takes (up, models)."""
    row = await conn.fetchrow(
        "SELECT up, models FROM sched_hosts WHERE provider = $1 AND name = $2 FOR UPDATE",
        provider,
        name,
    )
    new_models = sorted(set(models)) if models is not None else None
    old_models = sorted(row["models"]) if row is not None and row["models"] is not None else None
    changed = row is None or row["up"] != up or (models is not None and new_models != old_models)
    await conn.execute(
        "INSERT INTO sched_hosts AS h (provider, name, up, since, last_error, models, loaded)"
        " VALUES ($1, $2, $3, $4, $5, $6, COALESCE($7, '{}'::text[]))"
        " ON CONFLICT (provider, name) DO UPDATE SET"
        "  since = CASE WHEN h.up <> EXCLUDED.up THEN EXCLUDED.since ELSE h.since END,"
        "  up = EXCLUDED.up,"
        "  last_error = CASE WHEN EXCLUDED.last_error <> '' THEN EXCLUDED.last_error"
        "               ELSE h.last_error END,"
        "  models = CASE WHEN $8 THEN EXCLUDED.models ELSE h.models END,"
        "  loaded = COALESCE($7, h.loaded)",
        provider,
        name,
        up,
        now,
        error,
        new_models,
        sorted(set(loaded)) if loaded is not None else None,
        models is not None,
    )
    return changed


def choose(
    free: Sequence[tuple[HostState, int]], model: str, avoid: Iterable[str]
) -> HostState | None:
    """Among (host, slots in use) pairs with a free slot: the one a request should run on.

    The same preferences as ``service.scheduler.hosts.choose_host`` except the
    conversation's previous host (that affinity map is per process and not
    shared here): not a host it failed on, the model loaded, the least loaded.
    """
    avoided = frozenset(avoid)
    best: HostState | None = None
    best_key: tuple[bool, bool, float, int, int] | None = None
    for index, (host, used) in enumerate(free):
        if not host.serves(model):
            continue
        key = (host.name in avoided, not host.has_loaded(model), used / host.slots, used, index)
        if best_key is None or key < best_key:
            best, best_key = host, key
    return best
