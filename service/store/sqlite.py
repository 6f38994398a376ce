"""ConversationStore on a single SQLite file, one worker thread, one hop per operation."""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from datetime import date
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

from service.errors import ServiceUnavailable
from service.store import sqlite_ops as ops
from service.store import sqlite_summaries as summaries
from service.store.base import (
    Conversation,
    ConversationStore,
    ConversationSummary,
    NewMessage,
    NewSummary,
    StoredMessage,
    TokenSpend,
    UsageTotals,
    UserProfileRecord,
)
from service.store.migrations import SQLITE_MIGRATIONS, Migration
from service.store.rows import (
    check_batch,
    check_ids,
    check_page_size,
    check_summary,
    check_text,
    check_user_id,
    decode_page_token,
    encode_content,
    new_conversation_id,
    utc_now,
)
from service.store.sqlite_checkpoint import BACKSTOP_PAGES, DEFAULT_INTERVAL_S, Checkpointer
from service.store.sqlite_thread import StoreThread
from service.store.window import decode_message_token, estimate_message

P = ParamSpec("P")
T = TypeVar("T")

_NO_CURSOR = 2**63 - 1
_BUSY_RETRY_AFTER_S = 1.0


class SqliteStore(ConversationStore):
    """The default store: one SQLite file in WAL mode, one connection on one worker thread.

    Every public operation is a single function from ``sqlite_ops`` run on
    the store's own thread (``sqlite_thread``), a write being one whole
    transaction, or one savepoint of a group commit with the writes queued
    with it; its caller learns its outcome only once it is committed. The
    one thread serializes operations, so no transaction ever interleaves
    with another; a cancelled caller stops waiting, but an operation already
    running finishes (or rolls back) as a whole, and one not yet started
    never runs. WAL checkpoints run on a thread of their own
    (``sqlite_checkpoint``), ``checkpoint_interval_s`` after a commit.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout_ms: int = 5000,
        migrations: Sequence[Migration] = SQLITE_MIGRATIONS,
        checkpoint_interval_s: float = DEFAULT_INTERVAL_S,
    ) -> None:
        self.path = str(path)
        self._busy_timeout_ms = busy_timeout_ms
        self._migrations = tuple(migrations)
        self._checkpoint_interval_s = checkpoint_interval_s
        self._thread: StoreThread | None = None
        self._conn: sqlite3.Connection | None = None
        self._checkpointer: Checkpointer | None = None
        # Only open() and close() take it: concurrent calls must not race the setup.
        self._lifecycle = asyncio.Lock()

    async def open(self) -> None:
        async with self._lifecycle:
            if self._thread is not None:
                return
            checkpointer = None
            if self.path != ops.MEMORY:
                checkpointer = Checkpointer(
                    self.path,
                    interval_s=self._checkpoint_interval_s,
                    busy_timeout_ms=self._busy_timeout_ms,
                )
            thread = StoreThread(
                "sqlite-store", committed=checkpointer.committed if checkpointer else None
            )
            opening = thread.submit(
                functools.partial(
                    ops.connect,
                    self.path,
                    self._busy_timeout_ms,
                    self._migrations,
                    autocheckpoint_pages=BACKSTOP_PAGES if checkpointer else None,
                )
            )
            try:
                conn = await asyncio.wrap_future(opening)
            except BaseException as exc:
                # Cancelled mid-connect, the thread still finishes connecting:
                # close what it opened there, after it, then let the thread go.
                thread.submit(functools.partial(_discard, opening))
                thread.shutdown()
                if isinstance(exc, sqlite3.OperationalError) and ops.is_busy(exc):
                    raise self._busy(exc) from exc
                raise
            if checkpointer is not None:
                checkpointer.start()
            self._thread, self._conn, self._checkpointer = thread, conn, checkpointer

    async def close(self) -> None:
        """Wait for operations already submitted, then close the connection."""
        async with self._lifecycle:
            thread, conn, checkpointer = self._thread, self._conn, self._checkpointer
            self._thread = self._conn = self._checkpointer = None
            if thread is None or conn is None:
                return
            # FIFO on one thread: the close runs after every operation queued
            # before it. Shielded so a cancelled close() still closes.
            closing = asyncio.wrap_future(
                thread.submit(functools.partial(_close, conn, checkpointer))
            )
            thread.shutdown()
            await asyncio.shield(closing)

    async def schema_version(self) -> int:
        return await self._run(ops.schema_version)

    # --- conversations ------------------------------------------------------

    async def create_conversation(self, user_id: str, title: str = "") -> Conversation:
        check_user_id(user_id)
        check_text("title", title)
        now = utc_now()
        conversation = Conversation(new_conversation_id(), user_id, title, now, now, 0)
        await self._write(ops.create_conversation, conversation)
        return conversation

    async def get_conversation(self, user_id: str, conversation_id: str) -> Conversation:
        check_ids(user_id, conversation_id)
        return await self._run(ops.get_conversation, user_id, conversation_id)

    async def current_conversation(self, user_id: str) -> Conversation | None:
        page, _ = await self.list_conversations(user_id, 1)
        return page[0] if page else None

    async def list_conversations(
        self, user_id: str, page_size: int, page_token: str = ""
    ) -> tuple[list[Conversation], str]:
        check_user_id(user_id)
        limit = check_page_size(page_size)
        before = decode_page_token(page_token) or _NO_CURSOR
        return await self._run(ops.list_conversations, user_id, before, limit)

    async def delete_conversation(self, user_id: str, conversation_id: str) -> None:
        check_ids(user_id, conversation_id)
        await self._write(ops.delete_conversation, user_id, conversation_id)

    # --- messages -----------------------------------------------------------

    async def messages(self, user_id: str, conversation_id: str) -> list[StoredMessage]:
        check_ids(user_id, conversation_id)
        return await self._run(ops.messages, user_id, conversation_id)

    async def recent_messages(
        self, user_id: str, conversation_id: str, budget_tokens: int
    ) -> list[StoredMessage]:
        check_ids(user_id, conversation_id)
        return await self._run(ops.recent_messages, user_id, conversation_id, budget_tokens)

    async def messages_page(
        self, user_id: str, conversation_id: str, page_size: int, page_token: str = ""
    ) -> tuple[list[StoredMessage], str]:
        check_ids(user_id, conversation_id)
        limit = check_page_size(page_size)
        after = decode_message_token(conversation_id, page_token)
        return await self._run(ops.messages_page, user_id, conversation_id, after, limit)

    async def append_messages(
        self,
        user_id: str,
        conversation_id: str,
        messages: Sequence[NewMessage],
        *,
        create: bool = False,
    ) -> list[StoredMessage]:
        check_ids(user_id, conversation_id)
        check_batch(messages)
        # Encoding can refuse the batch (InvalidRequest): do it before any write.
        contents = [encode_content(m.content) for m in messages]
        estimates = [estimate_message(m.role, m.content) for m in messages]
        batch = tuple(messages)
        return await self._write(
            ops.append_messages,
            user_id,
            conversation_id,
            batch,
            contents,
            estimates,
            utc_now(),
            create,
        )

    async def clear_conversation(self, user_id: str, conversation_id: str) -> int:
        check_ids(user_id, conversation_id)
        return await self._write(ops.clear_conversation, user_id, conversation_id)

    async def get_summary(self, user_id: str, conversation_id: str) -> ConversationSummary | None:
        check_ids(user_id, conversation_id)
        return await self._run(summaries.get_summary, user_id, conversation_id)

    async def save_summary(self, user_id: str, conversation_id: str, summary: NewSummary) -> bool:
        check_ids(user_id, conversation_id)
        check_summary(summary)
        return await self._write(
            summaries.save_summary, user_id, conversation_id, summary, utc_now()
        )

    # --- users ----------------------------------------------------------------

    async def usage_totals(self, user_id: str) -> UsageTotals:
        check_user_id(user_id)
        return await self._run(ops.usage_totals, user_id)

    async def token_spend(self, user_id: str, day: date) -> TokenSpend:
        check_user_id(user_id)
        return await self._run(ops.token_spend, user_id, day)

    async def count_users(self) -> int:
        return await self._run(ops.count_users)

    async def get_profile(self, user_id: str) -> UserProfileRecord | None:
        check_user_id(user_id)
        return await self._run(ops.get_profile, user_id)

    async def put_profile(self, profile: UserProfileRecord) -> None:
        check_user_id(profile.user_id)
        check_text("display_name", profile.display_name)
        check_text("system_prompt", profile.system_prompt)
        await self._write(ops.put_profile, profile, utc_now())

    async def ping(self) -> bool:
        try:
            await self._run(ops.ping)
        except (sqlite3.Error, RuntimeError, ValueError, ServiceUnavailable):
            return False
        return True

    # --- plumbing -------------------------------------------------------------

    async def _run(
        self,
        operation: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run one read on the store's thread: a single hop, whatever it does."""
        thread, conn = self._opened()
        call = functools.partial(operation, conn, *args, **kwargs)
        return await self._outcome(thread.submit(call))

    async def _write(
        self,
        operation: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run one write on the store's thread, in a group commit with those queued with it."""
        thread, conn = self._opened()
        call = functools.partial(operation, conn, *args, **kwargs)
        return await self._outcome(thread.submit_write(conn, call))

    def _opened(self) -> tuple[StoreThread, sqlite3.Connection]:
        thread, conn = self._thread, self._conn
        if thread is None or conn is None:
            raise RuntimeError("the SQLite store is not open")
        return thread, conn

    async def _outcome(self, future: Future[T]) -> T:
        try:
            return await asyncio.wrap_future(future)
        except sqlite3.OperationalError as exc:
            if ops.is_busy(exc):
                raise self._busy(exc) from exc
            raise

    def _busy(self, exc: sqlite3.OperationalError) -> ServiceUnavailable:
        return ServiceUnavailable(
            f"the conversation database {self.path!r} stayed locked by another writer for"
            f" over {self._busy_timeout_ms} ms ({exc}); retry in a moment",
            retry_after_s=_BUSY_RETRY_AFTER_S,
        )


def _close(conn: sqlite3.Connection, checkpointer: Checkpointer | None) -> None:
    """On the store's thread, after every operation: stop checkpointing, then close."""
    if checkpointer is not None:
        checkpointer.close()
    conn.close()


def _discard(opening: Future[sqlite3.Connection]) -> None:
    """Close the connection an abandoned open() made, if it made one."""
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()
