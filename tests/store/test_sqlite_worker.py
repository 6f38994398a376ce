"""SQLite only: one worker thread per store, whole-operation cancellation, a locked database."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from service.content import TextBlock
from service.errors import Code, ServiceUnavailable
from service.store import NewMessage, SqliteStore
from service.store import sqlite_ops as ops
from service.store.migrations import SQLITE_MIGRATIONS

Watch = Callable[[str], threading.Event]


def exchange(tag: str) -> list[NewMessage]:
    return [
        NewMessage(role="user", content=[TextBlock(f"q{tag}")]),
        NewMessage(role="assistant", content=[TextBlock(f"a{tag}")], output_tokens=1),
    ]


@contextlib.asynccontextmanager
async def write_lock(path: Path) -> AsyncIterator[None]:
    """Hold the database's write lock from another connection, as another process would."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        await asyncio.to_thread(conn.execute, "BEGIN IMMEDIATE")
        yield
        await asyncio.to_thread(conn.execute, "ROLLBACK")
    finally:
        await asyncio.to_thread(conn.close)


def rows_in(path: Path, table: str) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


async def started(event: threading.Event) -> None:
    """Return once the store's thread runs the watched operation."""
    assert await asyncio.to_thread(event.wait, 10), "the store's thread never started it"


async def test_a_write_outlasting_busy_timeout_is_service_unavailable(db: Path) -> None:
    async with SqliteStore(db, busy_timeout_ms=50) as store:
        conversation = await store.create_conversation("alice", "kept")
        async with write_lock(db):
            with pytest.raises(ServiceUnavailable) as caught:
                await store.append_messages("alice", conversation.id, exchange("1"))
            # WAL: readers are not blocked by the other writer.
            assert (await store.get_conversation("alice", conversation.id)).title == "kept"
            assert await store.ping()
        error = caught.value
        assert error.code is Code.UNAVAILABLE
        assert error.retry_after_s == 1
        assert "locked" in error.message and "retry" in error.message
        assert await store.messages("alice", conversation.id) == []
        # Once the lock is gone the same store writes again.
        await store.append_messages("alice", conversation.id, exchange("2"))
        assert len(await store.messages("alice", conversation.id)) == 2


async def test_opening_a_database_locked_too_long_is_service_unavailable(db: Path) -> None:
    async with SqliteStore(db):
        pass  # created and migrated
    store = SqliteStore(db, busy_timeout_ms=50)
    async with write_lock(db):
        with pytest.raises(ServiceUnavailable, match="locked"):
            await store.open()
    assert not await store.ping()
    async with store:
        assert await store.ping()


async def test_a_started_operation_completes_even_if_its_caller_is_cancelled(
    db: Path, entered: Watch
) -> None:
    store = SqliteStore(db)
    await store.open()
    conversation = await store.create_conversation("alice")
    appending = entered("append_messages")
    async with write_lock(db):
        task = asyncio.create_task(store.append_messages("alice", conversation.id, exchange("1")))
        await started(appending)  # and held at its BEGIN IMMEDIATE while the lock is ours
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        closing = asyncio.create_task(store.close())
        # Not a wait for something to happen: the append cannot end while the lock is
        # held, so a close() that did not wait for it would be done within this window.
        done, _ = await asyncio.wait({closing}, timeout=0.05)
        assert not done, "close() must wait for the operation still running"
    await closing
    # The whole batch went in: both messages, the count and the usage.
    assert rows_in(db, "messages") == 2
    async with SqliteStore(db) as reopened:
        assert (await reopened.get_conversation("alice", conversation.id)).message_count == 2
        assert (await reopened.usage_totals("alice")).turns == 1


async def test_a_queued_operation_cancelled_before_it_starts_writes_nothing(
    db: Path, entered: Watch
) -> None:
    async with SqliteStore(db) as store:
        conversation = await store.create_conversation("alice")
        appending = entered("append_messages")
        async with write_lock(db):
            # The first append holds the store's only thread; the second waits behind it
            # (submitted once the first runs: writes queued together share one commit).
            first = asyncio.create_task(
                store.append_messages("alice", conversation.id, exchange("1"))
            )
            await started(appending)  # the first, which cannot end while the lock is held
            second = asyncio.create_task(
                store.append_messages("alice", conversation.id, exchange("2"))
            )
            await asyncio.sleep(0)  # its first step submits it
            second.cancel()
            with pytest.raises(asyncio.CancelledError):
                await second
        await first
        texts = [m.content[0] for m in await store.messages("alice", conversation.id)]
        assert texts == [TextBlock("q1"), TextBlock("a1")]
        assert (await store.usage_totals("alice")).turns == 1


async def test_a_cancelled_open_leaves_the_store_closed_and_reopenable(
    db: Path, entered: Watch
) -> None:
    async with SqliteStore(db):
        pass
    store = SqliteStore(db)
    connecting = entered("connect")
    async with write_lock(db):
        opening = asyncio.create_task(store.open())
        await started(connecting)  # and held while it checks the migrations
        opening.cancel()
        with pytest.raises(asyncio.CancelledError):
            await opening
        assert not await store.ping()
    async with store:
        conversation = await store.create_conversation("alice")
        assert (await store.get_conversation("alice", conversation.id)).id == conversation.id


async def test_waiting_for_the_lock_does_not_block_the_event_loop(db: Path, entered: Watch) -> None:
    async with SqliteStore(db) as first, SqliteStore(db) as second:
        creating = entered("create_conversation")
        async with write_lock(db):
            blocked = asyncio.create_task(first.create_conversation("alice"))
            # The loop runs this wait and the read below while the write waits for the lock.
            await started(creating)
            assert await second.count_users() == 0  # another store reads meanwhile
            assert not blocked.done()
        await blocked
        assert await second.count_users() == 1


@pytest.mark.parametrize(
    ("query", "params"),
    [(ops.RECENT_SQL, ("c", "u")), (ops.PAGE_SQL, (0, "c", "u", 10))],
    ids=["recent", "page"],
)
def test_message_reads_walk_the_index_without_sorting(
    query: str, params: tuple[object, ...]
) -> None:
    """Bounded reads stay bounded: no step of the plan sorts the whole conversation."""
    conn = ops.connect(ops.MEMORY, 1000, SQLITE_MIGRATIONS)
    try:
        plan = " | ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {query}", params))
    finally:
        conn.close()
    assert "messages_by_conversation" in plan, plan
    assert "TEMP B-TREE" not in plan, plan
