"""The SQLite store's operations as plain functions on a ``sqlite3`` connection.

Each function is one whole store operation: ``SqliteStore`` runs it on its
single worker thread in one hop, so a write's statements stay together and
commit or roll back as a unit (in a transaction of its own, or in a savepoint
of a group commit: ``sqlite_thread``). Inputs arrive validated.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import time
from collections.abc import Iterator, Sequence
from datetime import date, datetime
from pathlib import Path

from service.store.base import (
    Conversation,
    MessageStatus,
    NewMessage,
    Role,
    StoredMessage,
    TokenSpend,
    UsageTotals,
    UserProfileRecord,
)
from service.store.migrations import Migration, apply_sqlite
from service.store.rows import (
    batch_cache_usage,
    batch_usage,
    decode_content,
    encode_page_token,
    not_found,
    stored_message,
    title_from,
)
from service.store.window import RecentWindow, encode_message_token, estimate_message

MEMORY = ":memory:"
# SQLite allows 32766 bound variables per statement; a message row uses 13.
_ROWS_PER_INSERT = 1000
_WAL_RETRY_PAUSE_S = 0.01

_CONVERSATION_COLUMNS = "id, user_id, title, created_at, updated_at, message_count"
_ConversationRow = tuple[str, str, str, str, str, int]
_MessageRow = tuple[
    int, Role, str, MessageStatus, str, str, int, int, str, str, int | None, int, int
]
_MESSAGE_COLUMNS = (
    "m.id, m.role, m.content, m.status, m.provider, m.model,"
    " m.input_tokens, m.output_tokens, m.request_id, m.created_at, m.estimated_tokens,"
    " m.cache_creation_tokens, m.cache_read_tokens"
)

# Both walk the (conversation_id, id) index in order, never sorting the whole
# conversation (tests/store/test_sqlite_worker.py checks the plans). The LEFT
# JOIN, as in messages(), tells an empty conversation from a missing one; the
# id bound sits in the join condition so a conversation past its last page
# still yields its NULL row.
RECENT_SQL = (
    f"SELECT {_MESSAGE_COLUMNS}"  # noqa: S608
    " FROM conversations c LEFT JOIN messages m ON m.conversation_id = c.id"
    " WHERE c.id = ? AND c.user_id = ? ORDER BY m.id DESC"
)
PAGE_SQL = (
    f"SELECT {_MESSAGE_COLUMNS}"  # noqa: S608
    " FROM conversations c LEFT JOIN messages m ON m.conversation_id = c.id AND m.id > ?"
    " WHERE c.id = ? AND c.user_id = ? ORDER BY m.id LIMIT ?"
)


def connect(
    path: str,
    busy_timeout_ms: int,
    migrations: Sequence[Migration],
    *,
    autocheckpoint_pages: int | None = None,
) -> sqlite3.Connection:
    """Open the database, set it up for the store and apply pending migrations.

    ``autocheckpoint_pages``: when this connection checkpoints the WAL itself
    (SQLite's default: 1,000 pages); the store sets a far-off backstop when a
    checkpointer thread does it instead (``sqlite_checkpoint``).
    """
    if path != MEMORY:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: no implicit transactions; writes issue BEGIN themselves.
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        conn.execute("PRAGMA foreign_keys = ON")
        _enable_wal(conn, busy_timeout_ms)
        # With WAL, NORMAL only risks the last commits on power loss, never corruption.
        conn.execute("PRAGMA synchronous = NORMAL")
        if autocheckpoint_pages is not None:
            conn.execute(f"PRAGMA wal_autocheckpoint = {int(autocheckpoint_pages)}")
        with immediate(conn):
            apply_sqlite(conn, migrations)
    except BaseException:
        conn.close()
        raise
    return conn


def _enable_wal(conn: sqlite3.Connection, busy_timeout_ms: int) -> None:
    """Switch to WAL; retried because SQLite answers BUSY without waiting here.

    Another process switching the same new file at the same moment holds
    the lock briefly, and the busy handler is not consulted for this change.
    """
    give_up = time.monotonic() + busy_timeout_ms / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or time.monotonic() > give_up:
                raise
        time.sleep(_WAL_RETRY_PAUSE_S)


def is_busy(exc: sqlite3.Error) -> bool:
    """True for SQLITE_BUSY ("database is locked"): another connection holds the lock."""
    return exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY


@contextlib.contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE … COMMIT, rolled back on any exception.

    IMMEDIATE takes the write lock at once, so a writer in another process
    waits here (busy_timeout) instead of failing half-way through. Inside a
    transaction already open (a group commit, ``sqlite_thread``) the write
    joins it: whoever opened it commits, or rolls the write back.
    """
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def schema_version(conn: sqlite3.Connection) -> int:
    (version,) = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
    return int(version or 0)


def ping(conn: sqlite3.Connection) -> None:
    conn.execute("SELECT 1").fetchone()


# --- conversations ----------------------------------------------------------

# A conversation's activity number is its user's highest + 1, taken on each
# create and append. Write transactions are serialized, so a user's numbers
# never repeat; the (user_id, activity) index answers the MAX.


def create_conversation(conn: sqlite3.Connection, conversation: Conversation) -> None:
    stamp = conversation.created_at.isoformat()
    with immediate(conn):
        conn.execute(
            "INSERT INTO conversations (id, user_id, title, created_at, updated_at,"
            " message_count, activity) VALUES (?, ?, ?, ?, ?, 0,"
            " (SELECT COALESCE(MAX(activity), 0) + 1 FROM conversations WHERE user_id = ?))",
            (
                conversation.id,
                conversation.user_id,
                conversation.title,
                stamp,
                stamp,
                conversation.user_id,
            ),
        )


def get_conversation(conn: sqlite3.Connection, user_id: str, conversation_id: str) -> Conversation:
    row = conn.execute(
        f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE id = ? AND user_id = ?",  # noqa: S608
        (conversation_id, user_id),
    ).fetchone()
    if row is None:
        raise not_found(conversation_id)
    return _conversation(row)


def list_conversations(
    conn: sqlite3.Connection, user_id: str, before: int, limit: int
) -> tuple[list[Conversation], str]:
    rows = conn.execute(
        f"SELECT {_CONVERSATION_COLUMNS}, activity FROM conversations"  # noqa: S608
        " WHERE user_id = ? AND activity < ? ORDER BY activity DESC LIMIT ?",
        (user_id, before, limit + 1),
    ).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    token = encode_page_token(rows[-1][-1]) if more else ""
    return [_conversation(row[:-1]) for row in rows], token


def delete_conversation(conn: sqlite3.Connection, user_id: str, conversation_id: str) -> None:
    with immediate(conn):
        cursor = conn.execute(
            "DELETE FROM conversations WHERE id = ? AND user_id = ?", (conversation_id, user_id)
        )
        if cursor.rowcount == 0:
            raise not_found(conversation_id)


# --- messages ---------------------------------------------------------------


def messages(conn: sqlite3.Connection, user_id: str, conversation_id: str) -> list[StoredMessage]:
    # One query: the LEFT JOIN yields a single all-NULL message row for an
    # empty conversation and no row at all for a missing or foreign one.
    rows = conn.execute(
        f"SELECT {_MESSAGE_COLUMNS}"  # noqa: S608
        " FROM conversations c LEFT JOIN messages m ON m.conversation_id = c.id"
        " WHERE c.id = ? AND c.user_id = ? ORDER BY m.id",
        (conversation_id, user_id),
    ).fetchall()
    if not rows:
        raise not_found(conversation_id)
    return [_message(conversation_id, row) for row in rows if row[0] is not None]


def recent_messages(
    conn: sqlite3.Connection, user_id: str, conversation_id: str, budget_tokens: int
) -> list[StoredMessage]:
    """Newest first on the (conversation_id, id) index, stopping at the window's edge.

    The cursor is consumed lazily, so SQLite steps only over the rows the
    window takes plus one.
    """
    cursor = conn.execute(RECENT_SQL, (conversation_id, user_id))
    window = RecentWindow(budget_tokens)
    found = False
    try:
        for row in cursor:
            found = True
            if row[0] is None or not window.offer(_message(conversation_id, row)):
                break
    finally:
        cursor.close()
    if not found:
        raise not_found(conversation_id)
    return window.messages()


def messages_page(
    conn: sqlite3.Connection, user_id: str, conversation_id: str, after_id: int, limit: int
) -> tuple[list[StoredMessage], str]:
    rows = conn.execute(PAGE_SQL, (after_id, conversation_id, user_id, limit + 1)).fetchall()
    if not rows:
        raise not_found(conversation_id)
    page = [_message(conversation_id, row) for row in rows[:limit] if row[0] is not None]
    token = encode_message_token(conversation_id, page[-1].id) if len(rows) > limit else ""
    return page, token


def append_messages(
    conn: sqlite3.Connection,
    user_id: str,
    conversation_id: str,
    batch: Sequence[NewMessage],
    contents: Sequence[str],
    estimates: Sequence[int],
    now: datetime,
    create: bool = False,
) -> list[StoredMessage]:
    """Insert the batch (its encoded blocks and token estimates) and count its usage.

    ``create``: make the conversation first, in the same transaction, if it is new.
    """
    stamp = now.isoformat()
    with immediate(conn):
        if create:
            conn.execute(
                "INSERT INTO conversations (id, user_id, title, created_at, updated_at,"
                " message_count, activity) VALUES (?, ?, '', ?, ?, 0,"
                " (SELECT COALESCE(MAX(activity), 0) + 1 FROM conversations WHERE user_id = ?))"
                " ON CONFLICT (id) DO NOTHING",
                (conversation_id, user_id, stamp, stamp, user_id),
            )
        touched = conn.execute(
            "UPDATE conversations SET updated_at = ?, activity ="
            " (SELECT MAX(activity) + 1 FROM conversations WHERE user_id = ?),"
            " message_count = message_count + ?,"
            " title = CASE WHEN title = '' THEN ? ELSE title END"
            " WHERE id = ? AND user_id = ? RETURNING id",
            (stamp, user_id, len(batch), title_from(batch), conversation_id, user_id),
        ).fetchall()
        if not touched:
            raise not_found(conversation_id)
        ids: list[int] = []
        for start in range(0, len(batch), _ROWS_PER_INSERT):
            chunk = range(start, min(start + _ROWS_PER_INSERT, len(batch)))
            params: list[object] = []
            for i in chunk:
                m = batch[i]
                params += [conversation_id, m.role, contents[i], m.status, m.provider]
                params += [m.model, m.input_tokens, m.output_tokens, m.request_id, stamp]
                params += [estimates[i], m.cache_creation_input_tokens, m.cache_read_input_tokens]
            rows = conn.execute(_insert_messages_sql(len(chunk)), params).fetchall()
            # RETURNING order is unspecified; ids grow in VALUES order.
            ids += sorted(row[0] for row in rows)
        add_usage(conn, user_id, now.date(), batch_usage(batch), batch_cache_usage(batch))
    return [
        stored_message(message_id, conversation_id, m, now, estimate)
        for message_id, m, estimate in zip(ids, batch, estimates, strict=True)
    ]


def add_usage(
    conn: sqlite3.Connection,
    user_id: str,
    day: date,
    totals: tuple[int, int, int],
    cached: tuple[int, int],
) -> None:
    """Add (input, output, turns) and (cache writes, cache reads) to the user's totals
    and the day's spend, inside the caller's transaction."""
    if not (any(totals) or any(cached)):
        return
    conn.execute(
        "INSERT INTO user_usage (user_id, input_tokens, output_tokens, turns,"
        " cache_creation_tokens, cache_read_tokens)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (user_id) DO UPDATE SET"
        " input_tokens = input_tokens + excluded.input_tokens,"
        " output_tokens = output_tokens + excluded.output_tokens,"
        " turns = turns + excluded.turns,"
        " cache_creation_tokens = cache_creation_tokens + excluded.cache_creation_tokens,"
        " cache_read_tokens = cache_read_tokens + excluded.cache_read_tokens",
        (user_id, *totals, *cached),
    )
    if totals[0] + totals[1] or any(cached):
        conn.execute(
            "INSERT INTO token_spend"
            " (user_id, day, tokens, cache_creation_tokens, cache_read_tokens)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (user_id, day) DO UPDATE SET"
            " tokens = tokens + excluded.tokens,"
            " cache_creation_tokens = cache_creation_tokens"
            " + excluded.cache_creation_tokens,"
            " cache_read_tokens = cache_read_tokens + excluded.cache_read_tokens",
            (user_id, day.isoformat(), totals[0] + totals[1], *cached),
        )


def clear_conversation(conn: sqlite3.Connection, user_id: str, conversation_id: str) -> int:
    with immediate(conn):
        touched = conn.execute(
            "UPDATE conversations SET message_count = 0 WHERE id = ? AND user_id = ? RETURNING id",
            (conversation_id, user_id),
        ).fetchall()
        if not touched:
            raise not_found(conversation_id)
        # What the summary stands for is gone with the messages.
        conn.execute(
            "DELETE FROM conversation_summaries WHERE conversation_id = ?", (conversation_id,)
        )
        cursor = conn.execute("DELETE FROM messages WHERE conversation_id = ?", (conversation_id,))
        return int(cursor.rowcount)


# --- users ------------------------------------------------------------------


def usage_totals(conn: sqlite3.Connection, user_id: str) -> UsageTotals:
    row = conn.execute(
        "SELECT input_tokens, output_tokens, turns, cache_creation_tokens, cache_read_tokens"
        " FROM user_usage WHERE user_id = ?",
        (user_id,),
    ).fetchone()
    return UsageTotals(0, 0, 0) if row is None else UsageTotals(*row)


def token_spend(conn: sqlite3.Connection, user_id: str, day: date) -> TokenSpend:
    row = conn.execute(
        "SELECT COALESCE(SUM(CASE WHEN day = :day THEN tokens END), 0),"
        " COALESCE(SUM(tokens), 0),"
        " COALESCE(SUM(CASE WHEN day = :day THEN cache_creation_tokens END), 0),"
        " COALESCE(SUM(CASE WHEN day = :day THEN cache_read_tokens END), 0),"
        " COALESCE(SUM(cache_creation_tokens), 0), COALESCE(SUM(cache_read_tokens), 0)"
        " FROM token_spend WHERE user_id = :user AND day BETWEEN :first AND :day",
        {"day": day.isoformat(), "user": user_id, "first": day.replace(day=1).isoformat()},
    ).fetchone()
    return TokenSpend(*(int(value) for value in row))


def count_users(conn: sqlite3.Connection) -> int:
    (count,) = conn.execute("SELECT COUNT(DISTINCT user_id) FROM conversations").fetchone()
    return int(count)


def get_profile(conn: sqlite3.Connection, user_id: str) -> UserProfileRecord | None:
    row = conn.execute(
        "SELECT display_name, system_prompt FROM user_profiles WHERE user_id = ?", (user_id,)
    ).fetchone()
    return None if row is None else UserProfileRecord(user_id, row[0], row[1])


def put_profile(conn: sqlite3.Connection, profile: UserProfileRecord, now: datetime) -> None:
    with immediate(conn):
        conn.execute(
            "INSERT INTO user_profiles (user_id, display_name, system_prompt, updated_at)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (user_id) DO UPDATE SET"
            " display_name = excluded.display_name,"
            " system_prompt = excluded.system_prompt, updated_at = excluded.updated_at",
            (profile.user_id, profile.display_name, profile.system_prompt, now.isoformat()),
        )


# --- rows -------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _insert_messages_sql(rows: int) -> str:
    placeholders = ", ".join(["(" + ", ".join(["?"] * 13) + ")"] * rows)
    # Only placeholders are interpolated; every value is bound.
    return (
        "INSERT INTO messages (conversation_id, role, content, status, provider, model,"  # noqa: S608
        f" input_tokens, output_tokens, request_id, created_at, estimated_tokens,"
        " cache_creation_tokens, cache_read_tokens)"
        f" VALUES {placeholders}"
        " RETURNING id"
    )


def _conversation(row: _ConversationRow) -> Conversation:
    conversation_id, user_id, title, created_at, updated_at, message_count = row
    return Conversation(
        id=conversation_id,
        user_id=user_id,
        title=title,
        created_at=datetime.fromisoformat(created_at),
        updated_at=datetime.fromisoformat(updated_at),
        message_count=message_count,
    )


def _message(conversation_id: str, row: _MessageRow) -> StoredMessage:
    message_id, role, content, status, provider, model, tokens_in, tokens_out, request_id = row[:9]
    at, est, cache_creation, cache_read = row[9:13]
    blocks = decode_content(content)
    return StoredMessage(
        id=message_id,
        conversation_id=conversation_id,
        role=role,
        content=blocks,
        status=status,
        provider=provider,
        model=model,
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        request_id=request_id,
        created_at=datetime.fromisoformat(at),
        # NULL: stored before migration 3, estimated now.
        estimated_tokens=estimate_message(role, blocks) if est is None else est,
        cache_creation_input_tokens=cache_creation,
        cache_read_input_tokens=cache_read,
    )
