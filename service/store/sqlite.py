"""ConversationStore on a single SQLite file, through aiosqlite."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import aiosqlite

from service.store.base import (
    Conversation,
    ConversationStore,
    NewMessage,
    StoredMessage,
    UsageTotals,
    UserProfileRecord,
)
from service.store.migrations import SQLITE_MIGRATIONS, Migration, apply_sqlite
from service.store.rows import (
    batch_usage,
    check_batch,
    check_ids,
    check_page_size,
    check_text,
    check_user_id,
    decode_content,
    decode_page_token,
    encode_content,
    encode_page_token,
    new_conversation_id,
    not_found,
    stored_message,
    title_from,
    utc_now,
)

MEMORY = ":memory:"
_NO_CURSOR = 2**63 - 1
# SQLite allows 32766 bound variables per statement; a message row uses 10.
_ROWS_PER_INSERT = 1000


class SqliteStore(ConversationStore):
    """The default store: one SQLite file in WAL mode, one serialized connection.

    aiosqlite runs every call on one worker thread; an asyncio lock keeps
    each operation's statements together, so a transaction never interleaves
    with another task's statements on the shared connection.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout_ms: int = 5000,
        migrations: Sequence[Migration] = SQLITE_MIGRATIONS,
    ) -> None:
        self.path = str(path)
        self._busy_timeout_ms = busy_timeout_ms
        self._migrations = tuple(migrations)
        self._conn: Any = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        async with self._lock:
            if self._conn is None:
                self._conn = await self._connect()

    async def _connect(self) -> Any:
        if self.path != MEMORY:
            parent = Path(self.path).parent
            await asyncio.to_thread(parent.mkdir, parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions; we issue BEGIN ourselves.
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            await conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            await conn.execute("PRAGMA foreign_keys = ON")
            await self._enable_wal(conn)
            # With WAL, NORMAL only risks the last commits on power loss, never corruption.
            await conn.execute("PRAGMA synchronous = NORMAL")
            async with _immediate(conn):
                await apply_sqlite(conn, self._migrations)
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _enable_wal(self, conn: Any) -> None:
        """Switch to WAL; retried because SQLite answers BUSY without waiting here.

        Another process switching the same new file at the same moment holds
        the lock briefly, and the busy handler is not consulted for this change.
        """
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self._busy_timeout_ms / 1000
        while True:
            try:
                await conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or loop.time() > give_up:
                    raise
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            async with self._lock:
                await conn.close()

    async def schema_version(self) -> int:
        async with self._session() as conn:
            rows = await conn.execute_fetchall("SELECT MAX(version) FROM schema_migrations")
        return int(next(iter(rows))[0] or 0)

    # --- conversations ------------------------------------------------------

    # A conversation's activity number is its user's highest + 1, taken on
    # each create and append. Write transactions are serialized, so a user's
    # numbers never repeat; the (user_id, activity) index answers the MAX.

    async def create_conversation(self, user_id: str, title: str = "") -> Conversation:
        check_user_id(user_id)
        check_text("title", title)
        conversation_id, now = new_conversation_id(), utc_now()
        async with self._write() as conn:
            await conn.execute(
                "INSERT INTO conversations (id, user_id, title, created_at, updated_at,"
                " message_count, activity) VALUES (?, ?, ?, ?, ?, 0,"
                " (SELECT COALESCE(MAX(activity), 0) + 1 FROM conversations WHERE user_id = ?))",
                (conversation_id, user_id, title, now.isoformat(), now.isoformat(), user_id),
            )
        return Conversation(conversation_id, user_id, title, now, now, 0)

    async def get_conversation(self, user_id: str, conversation_id: str) -> Conversation:
        check_ids(user_id, conversation_id)
        async with self._session() as conn:
            rows = await conn.execute_fetchall(
                "SELECT id, user_id, title, created_at, updated_at, message_count"
                " FROM conversations WHERE id = ? AND user_id = ?",
                (conversation_id, user_id),
            )
        for row in rows:
            return _conversation(row)
        raise not_found(conversation_id)

    async def current_conversation(self, user_id: str) -> Conversation | None:
        page, _ = await self.list_conversations(user_id, 1)
        return page[0] if page else None

    async def list_conversations(
        self, user_id: str, page_size: int, page_token: str = ""
    ) -> tuple[list[Conversation], str]:
        check_user_id(user_id)
        limit = check_page_size(page_size)
        before = decode_page_token(page_token) or _NO_CURSOR
        async with self._session() as conn:
            rows = list(
                await conn.execute_fetchall(
                    "SELECT id, user_id, title, created_at, updated_at, message_count, activity"
                    " FROM conversations WHERE user_id = ? AND activity < ?"
                    " ORDER BY activity DESC LIMIT ?",
                    (user_id, before, limit + 1),
                )
            )
        more = len(rows) > limit
        rows = rows[:limit]
        token = encode_page_token(rows[-1]["activity"]) if more else ""
        return [_conversation(row) for row in rows], token

    async def delete_conversation(self, user_id: str, conversation_id: str) -> None:
        check_ids(user_id, conversation_id)
        async with self._write() as conn:
            cursor = await conn.execute(
                "DELETE FROM conversations WHERE id = ? AND user_id = ?",
                (conversation_id, user_id),
            )
            if cursor.rowcount == 0:
                raise not_found(conversation_id)

    # --- messages -----------------------------------------------------------

    async def messages(self, user_id: str, conversation_id: str) -> list[StoredMessage]:
        check_ids(user_id, conversation_id)
        # One query: the LEFT JOIN yields a single all-NULL message row for an
        # empty conversation and no row at all for a missing or foreign one.
        async with self._session() as conn:
            rows = await conn.execute_fetchall(
                "SELECT m.id, m.role, m.content, m.status, m.provider, m.model,"
                " m.input_tokens, m.output_tokens, m.request_id, m.created_at"
                " FROM conversations c LEFT JOIN messages m ON m.conversation_id = c.id"
                " WHERE c.id = ? AND c.user_id = ? ORDER BY m.id",
                (conversation_id, user_id),
            )
        rows = list(rows)
        if not rows:
            raise not_found(conversation_id)
        return [_message(conversation_id, row) for row in rows if row["id"] is not None]

    async def append_messages(
        self, user_id: str, conversation_id: str, messages: Sequence[NewMessage]
    ) -> list[StoredMessage]:
        check_ids(user_id, conversation_id)
        check_batch(messages)
        contents = [encode_content(m.content) for m in messages]
        now = utc_now()
        stamp = now.isoformat()
        async with self._write() as conn:
            touched = await conn.execute_fetchall(
                "UPDATE conversations SET updated_at = ?, activity ="
                " (SELECT MAX(activity) + 1 FROM conversations WHERE user_id = ?),"
                " message_count = message_count + ?,"
                " title = CASE WHEN title = '' THEN ? ELSE title END"
                " WHERE id = ? AND user_id = ? RETURNING id",
                (stamp, user_id, len(messages), title_from(messages), conversation_id, user_id),
            )
            if not list(touched):
                raise not_found(conversation_id)
            ids: list[int] = []
            for start in range(0, len(messages), _ROWS_PER_INSERT):
                chunk = range(start, min(start + _ROWS_PER_INSERT, len(messages)))
                params: list[object] = []
                for i in chunk:
                    m = messages[i]
                    params += [conversation_id, m.role, contents[i], m.status, m.provider]
                    params += [m.model, m.input_tokens, m.output_tokens, m.request_id, stamp]
                rows = await conn.execute_fetchall(_insert_messages_sql(len(chunk)), params)
                # RETURNING order is unspecified; ids grow in VALUES order.
                ids += sorted(row[0] for row in rows)
            totals = batch_usage(messages)
            if any(totals):
                await conn.execute(
                    "INSERT INTO user_usage (user_id, input_tokens, output_tokens, turns)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (user_id) DO UPDATE SET"
                    " input_tokens = input_tokens + excluded.input_tokens,"
                    " output_tokens = output_tokens + excluded.output_tokens,"
                    " turns = turns + excluded.turns",
                    (user_id, *totals),
                )
        return [
            stored_message(message_id, conversation_id, m, now)
            for message_id, m in zip(ids, messages, strict=True)
        ]

    async def clear_conversation(self, user_id: str, conversation_id: str) -> int:
        check_ids(user_id, conversation_id)
        async with self._write() as conn:
            touched = await conn.execute_fetchall(
                "UPDATE conversations SET message_count = 0"
                " WHERE id = ? AND user_id = ? RETURNING id",
                (conversation_id, user_id),
            )
            if not list(touched):
                raise not_found(conversation_id)
            cursor = await conn.execute(
                "DELETE FROM messages WHERE conversation_id = ?", (conversation_id,)
            )
            return int(cursor.rowcount)

    # --- users ----------------------------------------------------------------

    async def usage_totals(self, user_id: str) -> UsageTotals:
        check_user_id(user_id)
        async with self._session() as conn:
            rows = await conn.execute_fetchall(
                "SELECT input_tokens, output_tokens, turns FROM user_usage WHERE user_id = ?",
                (user_id,),
            )
        for row in rows:
            return UsageTotals(row[0], row[1], row[2])
        return UsageTotals(0, 0, 0)

    async def count_users(self) -> int:
        async with self._session() as conn:
            rows = await conn.execute_fetchall("SELECT COUNT(DISTINCT user_id) FROM conversations")
        return int(next(iter(rows))[0])

    async def get_profile(self, user_id: str) -> UserProfileRecord | None:
        check_user_id(user_id)
        async with self._session() as conn:
            rows = await conn.execute_fetchall(
                "SELECT display_name, system_prompt FROM user_profiles WHERE user_id = ?",
                (user_id,),
            )
        for row in rows:
            return UserProfileRecord(user_id, row[0], row[1])
        return None

    async def put_profile(self, profile: UserProfileRecord) -> None:
        check_user_id(profile.user_id)
        check_text("display_name", profile.display_name)
        check_text("system_prompt", profile.system_prompt)
        async with self._write() as conn:
            await conn.execute(
                "INSERT INTO user_profiles (user_id, display_name, system_prompt, updated_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (user_id) DO UPDATE SET"
                " display_name = excluded.display_name,"
                " system_prompt = excluded.system_prompt, updated_at = excluded.updated_at",
                (
                    profile.user_id,
                    profile.display_name,
                    profile.system_prompt,
                    utc_now().isoformat(),
                ),
            )

    async def ping(self) -> bool:
        try:
            async with self._session() as conn:
                await conn.execute_fetchall("SELECT 1")
        except (sqlite3.Error, RuntimeError, ValueError):
            return False
        return True

    # --- plumbing -------------------------------------------------------------

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[Any]:
        async with self._lock:
            if self._conn is None:
                raise RuntimeError("the SQLite store is not open")
            yield self._conn

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[Any]:
        """One write transaction; any exception rolls everything in it back."""
        async with self._session() as conn, _immediate(conn):
            yield conn


@asynccontextmanager
async def _immediate(conn: Any) -> AsyncIterator[None]:
    """BEGIN IMMEDIATE … COMMIT, rolled back on any exception, cancellation included.

    IMMEDIATE takes the write lock at once, so a writer in another process
    waits here (busy_timeout) instead of failing half-way through.
    """
    try:
        await conn.execute("BEGIN IMMEDIATE")
        yield
        await conn.execute("COMMIT")
    except BaseException:
        # Unconditional: a cancelled BEGIN or COMMIT may still be queued on
        # aiosqlite's thread, and ROLLBACK runs after it.
        with contextlib.suppress(sqlite3.OperationalError):
            await conn.execute("ROLLBACK")
        raise


@functools.lru_cache(maxsize=16)
def _insert_messages_sql(rows: int) -> str:
    placeholders = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * rows)
    # Only placeholders are interpolated; every value is bound.
    return (
        "INSERT INTO messages (conversation_id, role, content, status, provider, model,"  # noqa: S608
        f" input_tokens, output_tokens, request_id, created_at) VALUES {placeholders}"
        " RETURNING id"
    )


def _conversation(row: Any) -> Conversation:
    return Conversation(
        id=row["id"],
        user_id=row["user_id"],
        title=row["title"],
        created_at=datetime.fromisoformat(row["created_at"]),
        updated_at=datetime.fromisoformat(row["updated_at"]),
        message_count=row["message_count"],
    )


def _message(conversation_id: str, row: Any) -> StoredMessage:
    return StoredMessage(
        id=row["id"],
        conversation_id=conversation_id,
        role=row["role"],
        content=decode_content(row["content"]),
        status=row["status"],
        provider=row["provider"],
        model=row["model"],
        input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"],
        request_id=row["request_id"],
        created_at=datetime.fromisoformat(row["created_at"]),
    )
