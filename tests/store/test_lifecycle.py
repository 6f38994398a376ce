"""Contract: persistence, migrations and health across opening and closing."""

from __future__ import annotations

import asyncio
import sqlite3

import asyncpg
import pytest

from service.content import TextBlock
from service.store import ConversationStore, NewMessage, UserProfileRecord
from service.store.migrations import POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS, Migration
from tests.store.conftest import Backend


def all_migrations(backend: Backend) -> tuple[Migration, ...]:
    return SQLITE_MIGRATIONS if backend.name == "sqlite" else POSTGRES_MIGRATIONS


async def version_of(store: ConversationStore) -> int:
    return int(await store.schema_version())  # type: ignore[attr-defined]


async def test_data_survives_close_and_reopen(backend: Backend) -> None:
    async with backend.make() as store:
        conversation = await store.create_conversation("alice", "kept")
        stored = await store.append_messages(
            "alice",
            conversation.id,
            [
                NewMessage(role="user", content=[TextBlock("hello")]),
                NewMessage(role="assistant", content=[TextBlock("hi")], input_tokens=3),
            ],
        )
        await store.put_profile(UserProfileRecord("alice", "Alice", "Be kind."))
        usage = await store.usage_totals("alice")

    async with backend.make() as reopened:
        assert await reopened.get_conversation("alice", conversation.id) == (
            await reopened.current_conversation("alice")
        )
        assert (await reopened.get_conversation("alice", conversation.id)).title == "kept"
        assert await reopened.messages("alice", conversation.id) == stored
        assert await reopened.usage_totals("alice") == usage
        assert await reopened.get_profile("alice") == UserProfileRecord(
            "alice", "Alice", "Be kind."
        )


async def test_opening_again_is_a_no_op(backend: Backend) -> None:
    expected = len(all_migrations(backend))
    async with backend.make() as store:
        conversation = await store.create_conversation("alice")
        await store.open()  # a second open of the same instance changes nothing
        assert await version_of(store) == expected
    async with backend.make() as again:
        assert await version_of(again) == expected
        assert (await again.get_conversation("alice", conversation.id)).id == conversation.id
    assert await backend.count("schema_migrations") == expected


async def test_an_older_database_is_upgraded(backend: Backend) -> None:
    migrations = all_migrations(backend)
    async with backend.make(migrations=migrations[:1]) as old:
        assert await version_of(old) == 1
        conversation = await old.create_conversation("alice", "from v1")
    with pytest.raises((sqlite3.OperationalError, asyncpg.UndefinedTableError)):  # v2's table
        await backend.count("user_usage")

    async with backend.make() as upgraded:
        assert await version_of(upgraded) == len(migrations)
        assert (await upgraded.get_conversation("alice", conversation.id)).title == "from v1"
        await upgraded.append_messages(
            "alice",
            conversation.id,
            [NewMessage(role="assistant", content=[TextBlock("x")], output_tokens=2)],
        )
        assert (await upgraded.usage_totals("alice")).output_tokens == 2
    assert await backend.count("schema_migrations") == len(migrations)


async def test_a_newer_database_is_refused(backend: Backend) -> None:
    async with backend.make():
        pass
    older_build = backend.make(migrations=all_migrations(backend)[:1])
    with pytest.raises(RuntimeError, match="newer"):
        await older_build.open()
    assert not await older_build.ping()


async def test_concurrent_opens_of_a_fresh_database(backend: Backend) -> None:
    stores = [backend.make() for _ in range(3)]
    await asyncio.gather(*(s.open() for s in stores))
    for store in stores:
        assert await version_of(store) == len(all_migrations(backend))
    assert await backend.count("schema_migrations") == len(all_migrations(backend))
    conversation = await stores[0].create_conversation("alice")
    assert (await stores[2].get_conversation("alice", conversation.id)).id == conversation.id


async def test_concurrent_opens_of_one_instance(backend: Backend) -> None:
    store = backend.make()
    await asyncio.gather(store.open(), store.open())
    assert await store.ping()
    await store.close()
    assert not await store.ping()


async def test_ping(backend: Backend) -> None:
    store = backend.make()
    assert not await store.ping()
    await store.open()
    assert await store.ping()
    await store.close()
    assert not await store.ping()
    await store.close()  # closing twice is harmless


async def test_use_before_open_is_a_clear_error(backend: Backend) -> None:
    store = backend.make()
    with pytest.raises(RuntimeError, match="not open"):
        await store.create_conversation("alice")
