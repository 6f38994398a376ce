"""Two service processes on one PostgreSQL database share every user's token spend,
and it outlives both processes."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.e2e.limits_helpers import Users, assert_refused_over_rest, chat
from tests.e2e.queue_helpers import queue_stack
from tests.e2e.stack import Stack
from tests.fakes.ollama import FakeOllama
from tests.gateway_http import gateway_client

POSTGRES_ENV = "AGENT_TEST_POSTGRES_URL"
pytestmark = pytest.mark.postgres


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh schema on the test database (dropped afterwards), as a store URL."""
    url = os.environ.get(POSTGRES_ENV, "")
    if not url:
        pytest.skip(f"{POSTGRES_ENV} is not set")
    schema = "e2e_" + secrets.token_hex(6)
    yield f"{url}{'&' if '?' in url else '?'}schema={schema}"
    asyncio.run(_drop(url, schema))


async def _drop(url: str, schema: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def test_two_processes_see_the_same_spend(
    tmp_path: Path, fake_ollama: FakeOllama, postgres_url: str
) -> None:
    users_file = tmp_path / "users.yaml"
    who = Users.write(users_file, {"metered": {"tier": "metered"}, "other": {"tier": "metered"}})
    config = {
        "store": {"url": postgres_url},
        "auth": {"tokens_file": str(users_file)},
        "limits": {"tiers": {"metered": {"tokens_per_day": 1}}},
    }
    stacks: list[Stack] = []
    try:
        for name in ("one", "two"):
            stacks.append(queue_stack(tmp_path / name, fake_ollama, **config))
        one, two = stacks
        with (
            gateway_client(one.url, timeout=20) as via_one,
            gateway_client(two.url, timeout=20) as via_two,
        ):
            assert chat(via_one, who, "metered").status_code == 200  # spends over the budget
            assert_refused_over_rest(via_two, who, "metered", "tokens_per_day=1")
            assert chat(via_two, who, "other").status_code == 200

            for stack in stacks:  # both processes gone: the spend stays in the database
                assert stack.service is not None
                stack.service.stop()
            one.start_service()
            one.wait_service_ready()
            assert_refused_over_rest(via_one, who, "metered", "tokens_per_day=1")
            assert_refused_over_rest(via_one, who, "other", "tokens_per_day=1")
    finally:
        for stack in stacks:
            stack.stop()
