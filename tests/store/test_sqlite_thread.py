"""The SQLite store's thread on its own: its queue, its groups, its end."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from service.store import sqlite_thread
from service.store.sqlite_thread import StoreThread


@pytest.fixture
def conn() -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    db.execute("CREATE TABLE t (n INTEGER)")
    yield db
    db.close()


def held(thread: StoreThread) -> threading.Event:
    """Occupy the thread until the returned event is set."""
    entered, gate = threading.Event(), threading.Event()

    def hold() -> None:
        entered.set()
        gate.wait(10)

    thread.submit(hold)
    assert entered.wait(10)
    return gate


def alive(name: str) -> bool:
    return any(t.name == name for t in threading.enumerate())


def insert(conn: sqlite3.Connection, n: int) -> int:
    conn.execute("INSERT INTO t VALUES (?)", (n,))
    return n


def test_writes_queued_just_before_the_shutdown_run_and_the_thread_ends(
    conn: sqlite3.Connection,
) -> None:
    name = f"store-{uuid.uuid4().hex}"
    thread = StoreThread(name)
    gate = held(thread)
    writes = [thread.submit_write(conn, lambda n=n: insert(conn, n)) for n in range(3)]
    thread.shutdown()  # right behind the writes: no other operation between
    gate.set()
    assert [w.result(10) for w in writes] == [0, 1, 2]
    deadline = time.monotonic() + 10
    while alive(name) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not alive(name), "the thread did not end after its last operation"
    assert conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 3


def test_a_failure_of_the_thread_itself_ends_its_group_and_the_thread_goes_on(
    conn: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(conn: sqlite3.Connection, op: object) -> tuple[bool, object]:
        raise RuntimeError("a bug in the group commit")

    thread = StoreThread(f"store-{uuid.uuid4().hex}")
    try:
        gate = held(thread)
        monkeypatch.setattr(sqlite_thread, "_in_savepoint", broken)
        writes = [thread.submit_write(conn, lambda n=n: insert(conn, n)) for n in range(2)]
        gate.set()
        for write in writes:
            with pytest.raises(RuntimeError, match="a bug"):
                write.result(10)
        assert not conn.in_transaction  # what the failed group opened is rolled back
        monkeypatch.undo()
        assert thread.submit_write(conn, lambda: insert(conn, 7)).result(10) == 7
        assert conn.execute("SELECT n FROM t").fetchall() == [(7,)]
    finally:
        thread.shutdown()
