"""Versioned schema migrations, one ordered list per backend.

A database records each applied version in ``schema_migrations``. Opening a
store applies the missing versions, in order, inside one transaction that
first takes a database-wide lock, so two processes opening the same database
at once apply each migration exactly once. New versions are appended to the
lists below; an applied migration is never edited.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from service.store.rows import utc_now


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: its version number and the statements that perform it."""

    version: int
    description: str
    statements: tuple[str, ...]


# The version of the token-spend migration below, in both lists. Another branch adds
# version 3 ("message token estimates"); when both are merged this one becomes 4 here.
TOKEN_SPEND_VERSION = 4

# Prompt-cache writes and reads, per message, per user and per day. A constant
# default adds each column without rewriting the table on either engine.
CACHE_USAGE_VERSION = 5


# One summary per conversation of the history its window dropped (history.summarize).
SUMMARIES_VERSION = 6


def _summaries_table(integer: str, text: str, stamp: str) -> str:
    # covered_up_to: the last message id the summary stands for. The usage columns are
    # its latest request's (the user's totals and spend count every request).
    return f"""CREATE TABLE conversation_summaries (
        conversation_id {text} PRIMARY KEY REFERENCES conversations (id) ON DELETE CASCADE,
        text {text} NOT NULL,
        covered_up_to {integer} NOT NULL,
        provider {text} NOT NULL DEFAULT '',
        model {text} NOT NULL DEFAULT '',
        input_tokens {integer} NOT NULL DEFAULT 0,
        output_tokens {integer} NOT NULL DEFAULT 0,
        cache_creation_tokens {integer} NOT NULL DEFAULT 0,
        cache_read_tokens {integer} NOT NULL DEFAULT 0,
        updated_at {stamp} NOT NULL)"""


def _cache_columns(integer: str) -> tuple[str, ...]:
    return tuple(
        f"ALTER TABLE {table} ADD COLUMN {column} {integer} NOT NULL DEFAULT 0"
        for table in ("messages", "user_usage", "token_spend")
        for column in ("cache_creation_tokens", "cache_read_tokens")
    )


SQLITE_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "conversations and messages",
        (
            """CREATE TABLE conversations (
                id TEXT PRIMARY KEY,
                user_id TEXT NOT NULL,
                title TEXT NOT NULL DEFAULT '',
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL,
                -- Orders a user's conversations: the user's highest value + 1 on
                -- every create or append (writes are serialized); timestamps tie.
                activity INTEGER NOT NULL,
                message_count INTEGER NOT NULL DEFAULT 0)""",
            "CREATE INDEX conversations_by_user ON conversations (user_id, activity)",
            # AUTOINCREMENT: a deleted message's id is never handed out again.
            """CREATE TABLE messages (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                conversation_id TEXT NOT NULL
                    REFERENCES conversations (id) ON DELETE CASCADE,
                role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
                content TEXT NOT NULL,
                status TEXT NOT NULL CHECK (status IN ('complete', 'cancelled', 'failed')),
                provider TEXT NOT NULL DEFAULT '',
                model TEXT NOT NULL DEFAULT '',
                input_tokens INTEGER NOT NULL DEFAULT 0,
                output_tokens INTEGER NOT NULL DEFAULT 0,
                request_id TEXT NOT NULL DEFAULT '',
                created_at TEXT NOT NULL)""",
            "CREATE INDEX messages_by_conversation ON messages (conversation_id, id)",
        ),
    ),
    Migration(
        2,
        "usage totals and user profiles",
        (
            """CREATE TABLE user_usage (
                user_id TEXT PRIMARY KEY,
                input_tokens INTEGER NOT NULL DEFAULT 0,
                output_tokens INTEGER NOT NULL DEFAULT 0,
                turns INTEGER NOT NULL DEFAULT 0)""",
            """CREATE TABLE user_profiles (
                user_id TEXT PRIMARY KEY,
                display_name TEXT NOT NULL DEFAULT '',
                system_prompt TEXT NOT NULL DEFAULT '',
                updated_at TEXT NOT NULL)""",
        ),
    ),
    Migration(
        3,
        "token estimate kept with each message",
        (
            # NULL marks a row stored before this version: its estimate is
            # computed from the content when read (the same function that
            # fills the column on append), so no backfill pass is needed.
            "ALTER TABLE messages ADD COLUMN estimated_tokens INTEGER",
        ),
    ),
    Migration(
        TOKEN_SPEND_VERSION,
        "token spend per user and UTC day",
        (
            # One row per user and day: budgets read a day or a month as a range of rows.
            """CREATE TABLE token_spend (
                user_id TEXT NOT NULL,
                day TEXT NOT NULL,
                tokens INTEGER NOT NULL DEFAULT 0,
                PRIMARY KEY (user_id, day)) WITHOUT ROWID""",
        ),
    ),
    Migration(CACHE_USAGE_VERSION, "prompt cache token counts", _cache_columns("INTEGER")),
    Migration(
        SUMMARIES_VERSION,
        "conversation summaries",
        (_summaries_table("INTEGER", "TEXT", "TEXT"),),
    ),
)

POSTGRES_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "conversations and messages",
        (
            # Orders conversations by activity: timestamps tie within a clock
            # tick, and concurrent writers would race on a per-user maximum.
            "CREATE SEQUENCE conversation_activity AS bigint",
            """CREATE TABLE conversations (
                id text PRIMARY KEY,
                user_id text NOT NULL,
                title text NOT NULL DEFAULT '',
                created_at timestamptz NOT NULL,
                updated_at timestamptz NOT NULL,
                activity bigint NOT NULL,
                message_count integer NOT NULL DEFAULT 0)""",
            "CREATE INDEX conversations_by_user ON conversations (user_id, activity)",
            """CREATE TABLE messages (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                conversation_id text NOT NULL
                    REFERENCES conversations (id) ON DELETE CASCADE,
                role text NOT NULL CHECK (role IN ('user', 'assistant')),
                -- text, not jsonb: jsonb refuses the escaped NUL character that JSON allows.
                content text NOT NULL,
                status text NOT NULL CHECK (status IN ('complete', 'cancelled', 'failed')),
                provider text NOT NULL DEFAULT '',
                model text NOT NULL DEFAULT '',
                input_tokens bigint NOT NULL DEFAULT 0,
                output_tokens bigint NOT NULL DEFAULT 0,
                request_id text NOT NULL DEFAULT '',
                created_at timestamptz NOT NULL)""",
            "CREATE INDEX messages_by_conversation ON messages (conversation_id, id)",
        ),
    ),
    Migration(
        2,
        "usage totals and user profiles",
        (
            """CREATE TABLE user_usage (
                user_id text PRIMARY KEY,
                input_tokens bigint NOT NULL DEFAULT 0,
                output_tokens bigint NOT NULL DEFAULT 0,
                turns bigint NOT NULL DEFAULT 0)""",
            """CREATE TABLE user_profiles (
                user_id text PRIMARY KEY,
                display_name text NOT NULL DEFAULT '',
                system_prompt text NOT NULL DEFAULT '',
                updated_at timestamptz NOT NULL)""",
        ),
    ),
    Migration(
        3,
        "token estimate kept with each message",
        (
            # Nullable without a default: instant, no table rewrite. NULL is a
            # row stored before this version, estimated from its content on read.
            "ALTER TABLE messages ADD COLUMN estimated_tokens integer",
        ),
    ),
    Migration(
        TOKEN_SPEND_VERSION,
        "token spend per user and UTC day",
        (
            """CREATE TABLE token_spend (
                user_id text NOT NULL,
                day date NOT NULL,
                tokens bigint NOT NULL DEFAULT 0,
                PRIMARY KEY (user_id, day))""",
        ),
    ),
    Migration(CACHE_USAGE_VERSION, "prompt cache token counts", _cache_columns("bigint")),
    Migration(
        SUMMARIES_VERSION,
        "conversation summaries",
        (_summaries_table("bigint", "text", "timestamptz"),),
    ),
)

_SQLITE_LEDGER = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)"""
_POSTGRES_LEDGER = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY, description text NOT NULL, applied_at timestamptz NOT NULL)"""


def _pending(applied: set[int], migrations: Sequence[Migration]) -> list[Migration]:
    """The migrations still to apply; refuses a database newer than this code."""
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migration versions must be 1..n in order, got {versions}")
    unknown = applied - set(versions)
    if unknown:
        raise RuntimeError(
            f"database schema is at version {max(unknown)}, newer than this build "
            f"knows ({len(versions)}); upgrade the service instead of opening it with this one"
        )
    return [m for m in migrations if m.version not in applied]


def quote_identifier(name: str) -> str:
    """A PostgreSQL identifier, quoted so any name is taken literally."""
    return '"' + name.replace('"', '""') + '"'


def apply_sqlite(conn: sqlite3.Connection, migrations: Sequence[Migration]) -> int:
    """Apply missing migrations on a sqlite3 connection; returns the schema version.

    Run it inside BEGIN IMMEDIATE: that takes the write lock up front, so a
    second process waits (busy_timeout) and then finds the work done.
    """
    conn.execute(_SQLITE_LEDGER)
    applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    for migration in _pending(applied, migrations):
        for statement in migration.statements:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO schema_migrations (version, description, applied_at) VALUES (?, ?, ?)",
            (migration.version, migration.description, utc_now().isoformat()),
        )
    return len(migrations)


async def apply_postgres(conn: Any, migrations: Sequence[Migration], schema: str | None) -> int:
    """Apply missing migrations on an asyncpg connection, creating ``schema`` if given.

    Run it inside a transaction: the transaction-scoped advisory lock taken
    here, keyed by the schema, serializes processes opening it at once.
    """
    lock_key = f"agent_store.migrations:{schema or ''}"
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", lock_key)
    if schema:
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_identifier(schema)}")
    await conn.execute(_POSTGRES_LEDGER)
    rows = await conn.fetch("SELECT version FROM schema_migrations")
    for migration in _pending({row["version"] for row in rows}, migrations):
        for statement in migration.statements:
            await conn.execute(statement)
        await conn.execute(
            "INSERT INTO schema_migrations (version, description, applied_at) VALUES ($1, $2, $3)",
            migration.version,
            migration.description,
            utc_now(),
        )
    return len(migrations)
