"""requests_per_minute across replicas: one bucket per user in PostgreSQL, not one per process."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest

from service.limits.rate_port import LocalRate, SharedRate

URL = os.environ.get("AGENT_TEST_POSTGRES_URL", "")
pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not URL, reason="AGENT_TEST_POSTGRES_URL is not set"),
]


@pytest.fixture
async def replicas() -> AsyncIterator[tuple[SharedRate, SharedRate]]:
    schema = f"rate_{secrets.token_hex(4)}"
    first, second = SharedRate(URL, schema=schema), SharedRate(URL, schema=schema)
    await first.open()
    await second.open()
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()
        conn = await asyncpg.connect(URL)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


async def test_two_replicas_share_one_bucket_per_user(
    replicas: tuple[SharedRate, SharedRate],
) -> None:
    a, b = replicas
    taken = [await (a if i % 2 else b).take("alice", 3) for i in range(3)]
    assert taken == [None, None, None]  # the burst of 3, spread over both replicas
    wait = await a.take("alice", 3)
    assert wait is not None and 0 < wait <= 20.0  # 3 a minute: one more within 20 s
    assert await b.take("alice", 3) is not None  # the other replica refuses it too
    assert await b.take("bob", 3) is None  # another user has a bucket of his own


async def test_a_request_refused_later_gives_its_token_back_on_any_replica(
    replicas: tuple[SharedRate, SharedRate],
) -> None:
    a, b = replicas
    for _ in range(2):
        assert await a.take("carol", 2) is None
    assert await b.take("carol", 2) is not None
    await b.give_back("carol", 2)  # the last admitted one was refused by max_active
    assert await a.take("carol", 2) is None


async def test_the_local_buckets_follow_the_same_rule() -> None:
    clock = [0.0]
    local = LocalRate(lambda: clock[0])
    assert [await local.take("u", 2) for _ in range(2)] == [None, None]
    assert await local.take("u", 2) == pytest.approx(30.0)
    clock[0] = 30.0
    assert await local.take("u", 2) is None
