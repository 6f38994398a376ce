"""The SQLite store's one thread: operations in submission order, writes in group commits.

Every operation of a ``SqliteStore`` runs here, one after another, in the
order it was submitted. Writes that are waiting together when the thread
gets to them (typically the turns that finished while the previous commit
ran) share one ``BEGIN IMMEDIATE … COMMIT``: each runs inside a savepoint of
its own, so one that fails is rolled back alone and only its caller gets the
error. Results are handed out only after the commit, so nothing is
acknowledged that is not durable; if the shared transaction itself is lost
(the commit fails, or an error makes SQLite roll it all back), every write
of the group runs again on its own, each with its own outcome.

A read never joins a group: it ends the one before it, so it sees exactly
the writes submitted before it, committed. An operation whose caller
cancelled it before it started never runs; one that started finishes (or
rolls back) as a whole.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from queue import SimpleQueue
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)

# A group's writes wait for its commit: the cap bounds that wait and the transaction.
MAX_GROUP = 64


@dataclass(slots=True)
class _Operation:
    call: Callable[[], Any]
    future: Future[Any]
    # Set for a write: the connection its group's transaction runs on.
    conn: sqlite3.Connection | None = None


class StoreThread:
    """Runs the store's operations on one thread, in order; see the module's docstring.

    ``committed`` is called on the thread after every commit of writes (it
    wakes the WAL checkpointer).
    """

    def __init__(
        self,
        name: str,
        *,
        committed: Callable[[], None] | None = None,
        max_group: int = MAX_GROUP,
    ) -> None:
        self._queue: SimpleQueue[_Operation | None] = SimpleQueue()
        self._committed = committed
        self._max_group = max_group
        self._shut = False
        # A daemon: an unclosed store must not keep the process alive at exit, and a
        # transaction cut there was never acknowledged (SQLite rolls it back on open).
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def submit(self, call: Callable[[], T]) -> Future[T]:
        """Run ``call`` on the thread after everything submitted before it."""
        return self._put(_Operation(call, Future()))

    def submit_write(self, conn: sqlite3.Connection, call: Callable[[], T]) -> Future[T]:
        """Run the write ``call`` on ``conn``, in a group commit with the writes queued with it.

        ``call`` writes through ``sqlite_ops.immediate``, which joins the group's
        transaction when there is one.
        """
        return self._put(_Operation(call, Future(), conn))

    def shutdown(self) -> None:
        """Refuse new operations; the thread ends after those already submitted."""
        if not self._shut:
            self._shut = True
            self._queue.put(None)

    def _put(self, operation: _Operation) -> Future[Any]:
        if self._shut:
            raise RuntimeError("the SQLite store's thread is shut down")
        self._queue.put(operation)
        return operation.future

    # --- on the thread --------------------------------------------------------------

    def _main(self) -> None:
        queue = self._queue
        ahead: list[_Operation | None] = []  # taken from the queue, not run yet
        while True:
            operation = ahead.pop() if ahead else queue.get()
            if operation is None:
                return
            group = [operation]
            if operation.conn is not None:
                # Take the writes already waiting behind it; stop at anything else.
                while len(group) < self._max_group and not queue.empty():
                    following = queue.get()
                    if following is None or following.conn is not operation.conn:
                        ahead.append(following)
                        break
                    group.append(following)
            try:
                if operation.conn is None:
                    self._run_alone(operation)
                else:
                    self._run_group(group)
            except BaseException as exc:  # a bug here must not leave callers waiting forever
                log.exception("the SQLite store's thread failed running an operation")
                _abandon(group, exc)

    def _run_alone(self, operation: _Operation) -> None:
        if not operation.future.set_running_or_notify_cancel():
            return  # cancelled before it started: it never runs
        try:
            value = operation.call()
        except BaseException as exc:
            operation.future.set_exception(exc)
            return
        operation.future.set_result(value)

    def _run_group(self, group: list[_Operation]) -> None:
        started = [op for op in group if op.future.set_running_or_notify_cancel()]
        if len(started) <= 1:
            for op in started:  # on its own: its own BEGIN IMMEDIATE … COMMIT
                _run_started(op, self._note_commit)
            return
        conn = started[0].conn
        assert conn is not None
        try:
            conn.execute("BEGIN IMMEDIATE")
        except BaseException as exc:  # locked past busy_timeout, or I/O: none of them can run
            for op in started:
                op.future.set_exception(exc)
            return
        outcomes: list[tuple[bool, Any]] = []
        try:
            for op in started:
                outcomes.append(_in_savepoint(conn, op))
            conn.execute("COMMIT")
        except _TransactionLost:
            self._retry_alone(conn, started)
            return
        except sqlite3.Error:
            log.warning("a group commit failed; its writes run again one by one", exc_info=True)
            self._retry_alone(conn, started)
            return
        self._note_commit()
        for op, (ok, value) in zip(started, outcomes, strict=True):
            if ok:
                op.future.set_result(value)
            else:
                op.future.set_exception(value)

    def _retry_alone(self, conn: sqlite3.Connection, started: list[_Operation]) -> None:
        """The shared transaction is gone: each write again in a transaction of its own."""
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                log.warning("rolling back a failed group commit failed", exc_info=True)
        for op in started:
            _run_started(op, self._note_commit)

    def _note_commit(self) -> None:
        if self._committed is not None:
            try:
                self._committed()
            except Exception:  # a hook must never fail a write that is committed
                log.exception("the store's commit hook failed")


def _abandon(group: list[_Operation], exc: BaseException) -> None:
    """End every caller of ``group`` still waiting with ``exc``; roll back what is open."""
    conn = group[0].conn
    if conn is not None and conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            log.warning("rolling back after a failure of the store's thread failed", exc_info=True)
    for op in group:
        if not op.future.done():
            op.future.set_exception(exc)


class _TransactionLost(Exception):
    """A write's failure took the whole group's transaction with it."""


def _in_savepoint(conn: sqlite3.Connection, op: _Operation) -> tuple[bool, Any]:
    """(True, result) or (False, its error), with a failed write rolled back alone."""
    conn.execute("SAVEPOINT store_write")
    try:
        value = op.call()
    except BaseException as exc:
        if not conn.in_transaction:  # SQLite rolled back everything (I/O error, disk full)
            raise _TransactionLost from exc
        conn.execute("ROLLBACK TO store_write")
        conn.execute("RELEASE store_write")
        return False, exc
    conn.execute("RELEASE store_write")
    return True, value


def _run_started(op: _Operation, committed: Callable[[], None]) -> None:
    """Run a write already marked running, in its own transaction, and hand out its outcome."""
    try:
        value = op.call()
    except BaseException as exc:
        op.future.set_exception(exc)
        return
    committed()
    op.future.set_result(value)
