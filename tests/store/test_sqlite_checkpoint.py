"""SQLite only: WAL checkpoints are the checkpointer's work, never a commit's."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

from service.content import TextBlock
from service.store import NewMessage, SqliteStore
from service.store.sqlite_checkpoint import Checkpointer


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


def test_a_close_between_the_wait_and_the_clear_still_stops_the_thread(db: Path) -> None:
    # Seen as a 60 s hang at a store's close in the suite: close() set "stop" and
    # "wake" just after the thread's interval wait and just before it cleared "wake";
    # the thread then checkpointed and waited for a wake that never came.
    checkpointer = Checkpointer(str(db), interval_s=0.01)

    class CloseRacesTheClear(threading.Event):
        raced = False

        def clear(self) -> None:
            if not self.raced:
                self.raced = True
                checkpointer._stop.set()  # close(), exactly here
                super().set()
            super().clear()

    checkpointer._wake = CloseRacesTheClear()
    checkpointer.start()
    checkpointer.committed()
    checkpointer._thread.join(5)
    assert not checkpointer._thread.is_alive(), "the checkpointer missed its close"
