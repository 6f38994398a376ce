"""Where ``requests_per_minute`` is counted: this process, or PostgreSQL shared by replicas.

The rule is the same token bucket either way (``service.limits.bucket``): a
user's bucket starts full (a burst of ``requests_per_minute``), refills
evenly over a minute, and a request refused later (by ``max_active`` or a
queue cap) gives its token back. With several service replicas the buckets
live in one table, each take a single atomic statement on the database's
clock, so a user gets exactly the rate across all replicas, not the rate
times the number of replicas.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any, Protocol

import asyncpg

from service.errors import Reason, ServiceUnavailable
from service.limits.bucket import RequestRate

_PRUNE_EVERY_S = 60.0
_CREATE_LOCK = 0x5C4ED0_0020  # serializes creating sched_rate (see SharedRate.open)
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class RateCounter(Protocol):
    """Takes and gives back requests of a user's per-minute budget."""

    async def take(self, user_id: str, rate_per_minute: int) -> float | None:
        """None when the request fits; else the seconds until one does."""
        ...

    async def give_back(self, user_id: str, rate_per_minute: int) -> None: ...


class LocalRate:
    """The buckets in this process (one service process, the embedded default)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets = RequestRate()
        self._pruned_at = clock()

    async def take(self, user_id: str, rate_per_minute: int) -> float | None:
        now = self._clock()
        if now - self._pruned_at >= _PRUNE_EVERY_S:
            self._buckets.prune(now)
            self._pruned_at = now
        return self._buckets.take(user_id, rate_per_minute, now)

    async def give_back(self, user_id: str, rate_per_minute: int) -> None:
        self._buckets.give_back(user_id, rate_per_minute)


# One atomic statement on the database's clock: refill the bucket up to now (a changed
# rate starts a fresh, full one), then take a token if there is a whole one.
_REFILL = (
    "CASE WHEN b.rate <> $2 THEN $2::float8"
    " ELSE LEAST($2::float8, b.tokens + (extract(epoch FROM clock_timestamp()) - b.at)"
    " * $2 / 60.0) END"
)
_TAKE = " ".join(
    [
        "INSERT INTO sched_rate AS b (user_id, rate, tokens, at, admitted)",
        "VALUES ($1, $2, $2 - 1, extract(epoch FROM clock_timestamp()), true)",
        "ON CONFLICT (user_id) DO UPDATE SET tokens = CASE WHEN",
        _REFILL,
        ">= 1 THEN",
        _REFILL,
        "- 1 ELSE",
        _REFILL,
        "END, admitted =",
        _REFILL,
        ">= 1, rate = $2, at = extract(epoch FROM clock_timestamp())",
        "RETURNING tokens, admitted",
    ]
)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS sched_rate (
    user_id  text PRIMARY KEY,
    rate     integer NOT NULL,
    tokens   double precision NOT NULL,
    at       double precision NOT NULL,  -- the database's clock, epoch seconds
    admitted boolean NOT NULL
);
"""


class SharedRate:
    """The buckets in PostgreSQL, one row per user, shared by every replica."""

    def __init__(self, dsn: str, *, schema: str | None = None) -> None:
        if schema is not None and not _SCHEMA_NAME.fullmatch(schema):
            raise ValueError(f"schema {schema!r} must be a lower-case identifier")
        self._dsn = dsn
        self._schema = schema
        self._pool: Any = None

    async def open(self) -> None:
        settings = {"search_path": self._schema} if self._schema else {}
        self._pool = await asyncpg.create_pool(
            self._dsn, min_size=0, max_size=2, server_settings=settings
        )
        async with self._pool.acquire() as conn, conn.transaction():
            # Replicas start together: concurrent CREATE ... IF NOT EXISTS can still
            # collide in PostgreSQL's catalog, so the creation is serialized.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _CREATE_LOCK)
            if self._schema:
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self._schema}"')
            await conn.execute(_SCHEMA)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    async def take(self, user_id: str, rate_per_minute: int) -> float | None:
        try:
            row = await self._pool.fetchrow(_TAKE, user_id, rate_per_minute)
        except (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError) as exc:
            raise ServiceUnavailable(
                "the shared request-rate counter cannot be reached; retry shortly",
                retry_after_s=2.0,
                reason=Reason.STORE_UNAVAILABLE,
            ) from exc
        if row["admitted"]:
            return None
        return (1.0 - float(row["tokens"])) / (rate_per_minute / 60.0)

    async def give_back(self, user_id: str, rate_per_minute: int) -> None:
        await self._pool.execute(
            "UPDATE sched_rate SET tokens = LEAST(rate, tokens + 1)"
            " WHERE user_id = $1 AND rate = $2",
            user_id,
            rate_per_minute,
        )
