"""SQLite only: writes queued together share one commit, each with its own outcome."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from service.content import TextBlock
from service.errors import NotFound
from service.store import SqliteStore, UserProfileRecord
from service.store import sqlite_ops as ops
from service.store.rows import new_conversation_id
from tests.store.test_sqlite_worker import Watch, exchange, started, write_lock

Put = Callable[[sqlite3.Connection, UserProfileRecord, datetime], None]


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every statement the store's connection runs, in order (its trace callback)."""
    seen: list[str] = []
    connect = ops.connect

    def traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)
        conn.set_trace_callback(seen.append)
        return conn

    monkeypatch.setattr(ops, "connect", traced)
    return seen


def profile(user: str, name: str = "") -> UserProfileRecord:
    return UserProfileRecord(user, name or user, "")


def failing_for(monkeypatch: pytest.MonkeyPatch, user: str, fail: Put) -> None:
    """put_profile writes as usual, then runs ``fail`` for ``user``, in the same transaction."""
    real: Put = ops.put_profile

    def put(conn: sqlite3.Connection, record: UserProfileRecord, now: datetime) -> None:
        with ops.immediate(conn):
            real(conn, record, now)  # joins this transaction
            if record.user_id == user:
                fail(conn, record, now)

    monkeypatch.setattr(ops, "put_profile", put)


async def queued_behind_a_held_write(
    db: Path, store: SqliteStore, entered: Watch, writes: list[Awaitable[Any]]
) -> list[Any]:
    """Hold the store's thread in a write waiting for the lock, queue ``writes`` behind it,
    let the lock go; every outcome (result or error), in order."""
    holding = entered("create_conversation")
    async with write_lock(db):
        first = asyncio.create_task(store.create_conversation("holder"))
        await started(holding)  # at its BEGIN IMMEDIATE, which waits for our lock
        tasks = [asyncio.ensure_future(w) for w in writes]
        # Each task submits its write in its first step; the lock is still ours.
        await asyncio.sleep(0)
        assert not first.done()
    await first
    return list(await asyncio.gather(*tasks, return_exceptions=True))


async def test_writes_queued_while_one_runs_share_one_commit(
    db: Path, entered: Watch, statements: list[str]
) -> None:
    async with SqliteStore(db) as store:
        conversation = await store.create_conversation("alice")
        before = statements.count("COMMIT")
        fresh = new_conversation_id()
        appends = [
            store.append_messages("alice", conversation.id, exchange(str(i))) for i in range(5)
        ]
        appends.append(store.append_messages("bob", fresh, exchange("b"), create=True))
        outcomes = await queued_behind_a_held_write(db, store, entered, appends)
        # The held write committed alone, the six queued behind it in one transaction.
        assert statements.count("COMMIT") - before == 2
        ids = [m.id for batch in outcomes for m in batch]
        assert len(set(ids)) == 12 and ids == sorted(ids)
        texts = [m.content[0] for m in await store.messages("alice", conversation.id)]
        assert texts == [TextBlock(f"{kind}{i}") for i in range(5) for kind in "qa"]
        assert (await store.get_conversation("bob", fresh)).message_count == 2
        assert (await store.usage_totals("alice")).turns == 5


async def test_a_failing_write_of_a_group_fails_alone(
    db: Path, entered: Watch, statements: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(conn: sqlite3.Connection, record: UserProfileRecord, now: datetime) -> None:
        raise RuntimeError("refused after writing")

    failing_for(monkeypatch, "mallory", refuse)
    async with SqliteStore(db) as store:
        conversation = await store.create_conversation("alice")
        before = statements.count("COMMIT")
        outcomes = await queued_behind_a_held_write(
            db,
            store,
            entered,
            [
                store.put_profile(profile("alice")),
                store.put_profile(profile("mallory")),
                store.append_messages("alice", "c_missing", exchange("x")),
                store.append_messages("alice", conversation.id, exchange("1")),
            ],
        )
        assert outcomes[0] is None and outcomes[3][0].content == (TextBlock("q1"),)
        assert isinstance(outcomes[1], RuntimeError)
        assert isinstance(outcomes[2], NotFound)
        assert statements.count("COMMIT") - before == 2  # still one for the group
        # The failed write was rolled back to its savepoint: nothing of it is stored.
        assert await store.get_profile("mallory") is None
        assert await store.get_profile("alice") == profile("alice")
        assert (await store.get_conversation("alice", conversation.id)).message_count == 2


async def test_a_write_that_loses_the_transaction_leaves_the_others_to_run_alone(
    db: Path, entered: Watch, statements: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def lose(conn: sqlite3.Connection, record: UserProfileRecord, now: datetime) -> None:
        conn.execute("ROLLBACK")  # what SQLite does itself on an I/O error or a full disk
        conn.execute("SELECT * FROM no_such_table")

    failing_for(monkeypatch, "mallory", lose)
    async with SqliteStore(db) as store:
        outcomes = await queued_behind_a_held_write(
            db,
            store,
            entered,
            [
                store.put_profile(profile("alice")),
                store.put_profile(profile("mallory")),
                store.put_profile(profile("bob")),
            ],
        )
        assert outcomes[0] is None and outcomes[2] is None
        assert isinstance(outcomes[1], sqlite3.OperationalError)
        assert await store.get_profile("alice") == profile("alice")
        assert await store.get_profile("bob") == profile("bob")
        assert await store.get_profile("mallory") is None


async def test_a_failed_group_commit_gives_each_write_its_own_outcome(
    db: Path, entered: Watch, statements: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def dangle(conn: sqlite3.Connection, record: UserProfileRecord, now: datetime) -> None:
        # Checked only at COMMIT: the group's commit fails, not this write.
        conn.execute("PRAGMA defer_foreign_keys = ON")
        conn.execute(
            "INSERT INTO messages (conversation_id, role, content, status, created_at)"
            " VALUES ('c_nowhere', 'user', '[]', 'complete', '')"
        )

    failing_for(monkeypatch, "mallory", dangle)
    async with SqliteStore(db) as store:
        conversation = await store.create_conversation("alice")
        outcomes = await queued_behind_a_held_write(
            db,
            store,
            entered,
            [
                store.append_messages("alice", conversation.id, exchange("1")),
                store.put_profile(profile("mallory")),
                store.put_profile(profile("bob")),
            ],
        )
        assert outcomes[0][1].content == (TextBlock("a1"),)
        assert isinstance(outcomes[1], sqlite3.IntegrityError)
        assert outcomes[2] is None
        assert (await store.get_conversation("alice", conversation.id)).message_count == 2
        assert await store.get_profile("bob") == profile("bob")
        assert await store.get_profile("mallory") is None
        assert await backend_rows(db, "messages") == 2


async def test_a_read_between_writes_sees_those_before_it_committed(
    db: Path, entered: Watch, statements: list[str]
) -> None:
    async with SqliteStore(db) as store:
        before = statements.count("COMMIT")
        outcomes = await queued_behind_a_held_write(
            db,
            store,
            entered,
            [
                store.put_profile(profile("alice", "one")),
                store.put_profile(profile("bob", "one")),
                store.get_profile("alice"),
                store.put_profile(profile("alice", "two")),
                store.put_profile(profile("bob", "two")),
            ],
        )
        assert outcomes[2] == profile("alice", "one")
        # The held write, the two writes before the read, the two after it.
        assert statements.count("COMMIT") - before == 3
        assert await store.get_profile("alice") == profile("alice", "two")


async def test_a_queued_write_cancelled_before_its_group_starts_never_runs(
    db: Path, entered: Watch
) -> None:
    async with SqliteStore(db) as store:
        conversation = await store.create_conversation("alice")
        holding = entered("create_conversation")
        async with write_lock(db):
            first = asyncio.create_task(store.create_conversation("holder"))
            await started(holding)
            kept = asyncio.create_task(
                store.append_messages("alice", conversation.id, exchange("1"))
            )
            dropped = asyncio.create_task(
                store.append_messages("alice", conversation.id, exchange("2"))
            )
            await asyncio.sleep(0)  # both submitted behind the held write
            dropped.cancel()
            with pytest.raises(asyncio.CancelledError):
                await dropped
        await first
        await kept
        texts = [m.content[0] for m in await store.messages("alice", conversation.id)]
        assert texts == [TextBlock("q1"), TextBlock("a1")]


async def backend_rows(db: Path, table: str) -> int:
    def count() -> int:
        conn = sqlite3.connect(db)
        try:
            return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
        finally:
            conn.close()

    return await asyncio.to_thread(count)
