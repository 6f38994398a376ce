"""SQLite only: WAL checkpoints are the checkpointer's work, never a commit's."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from service.content import TextBlock
from service.store import NewMessage, SqliteStore


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "agent.db"


def big_message(i: int) -> list[NewMessage]:
    # ~100 database pages each, in overflow pages of its own.
    return [NewMessage(role="user", content=[TextBlock(f"{i}" + "x" * 400_000)])]


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Wait for a state another thread brings about (fails after ``timeout_s``)."""
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


async def test_commits_leave_the_wal_to_the_checkpointer(db: Path) -> None:
    # The checkpointer waits an hour after a commit: only a commit itself could checkpoint.
    async with SqliteStore(db, checkpoint_interval_s=3600) as store:
        conversation = await store.create_conversation("alice")
        size = db.stat().st_size
        for i in range(12):  # ~1,200 pages: past SQLite's own autocheckpoint (1,000)
            await store.append_messages("alice", conversation.id, big_message(i))
        assert db.stat().st_size == size, "a commit copied the WAL into the database file"
        assert len(await store.messages("alice", conversation.id)) == 12


async def test_the_checkpointer_copies_the_wal_soon_after_a_commit(db: Path) -> None:
    async with SqliteStore(db, checkpoint_interval_s=0) as store:
        conversation = await store.create_conversation("alice")
        size = db.stat().st_size
        for i in range(3):  # ~300 pages: far below any autocheckpoint
            await store.append_messages("alice", conversation.id, big_message(i))
        await until(lambda: db.stat().st_size > size + 1_000_000)
        assert len(await store.messages("alice", conversation.id)) == 3


async def test_a_store_in_memory_has_no_checkpointer() -> None:
    async with SqliteStore(":memory:") as store:
        conversation = await store.create_conversation("alice")
        await store.append_messages("alice", conversation.id, big_message(0))
        assert len(await store.messages("alice", conversation.id)) == 1
