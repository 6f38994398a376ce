"""Contract: prompt-cache writes and reads are stored per message, per user and per day."""

from __future__ import annotations

import sqlite3

from service.content import TextBlock
from service.store import ConversationStore, NewMessage
from service.store.base import TokenSpend, UsageTotals
from service.store.rows import utc_now

QUESTION = NewMessage(role="user", content=[TextBlock("q")])


def cached_reply(written: int, read: int, input_tokens: int = 7) -> NewMessage:
    return NewMessage(
        role="assistant",
        content=[TextBlock("ok")],
        input_tokens=input_tokens,
        output_tokens=3,
        cache_creation_input_tokens=written,
        cache_read_input_tokens=read,
    )


async def test_messages_keep_their_cache_counts(store: ConversationStore) -> None:
    conversation = await store.create_conversation("alice")
    stored = await store.append_messages(
        "alice", conversation.id, [QUESTION, cached_reply(1500, 0), cached_reply(20, 1500)]
    )
    read = await store.messages("alice", conversation.id)
    assert read == stored
    assert [(m.cache_creation_input_tokens, m.cache_read_input_tokens) for m in read] == [
        (0, 0),
        (1500, 0),
        (20, 1500),
    ]
    page, _ = await store.messages_page("alice", conversation.id, 10)
    assert page == stored
    recent = await store.recent_messages("alice", conversation.id, 10_000)
    assert recent == stored


async def test_totals_and_spend_count_cache_tokens_apart(store: ConversationStore) -> None:
    today = utc_now().date()
    conversation = await store.create_conversation("alice")
    await store.append_messages("alice", conversation.id, [QUESTION, cached_reply(1500, 0)])
    await store.append_messages("alice", conversation.id, [QUESTION, cached_reply(20, 1500)])
    # Only cache reads, no other input or output: still counted.
    await store.append_messages(
        "alice", conversation.id, [QUESTION, cached_reply(0, 900, input_tokens=0)]
    )
    totals = await store.usage_totals("alice")
    assert totals == UsageTotals(14, 9, 3, 1520, 2400)
    assert await store.token_spend("alice", today) == TokenSpend(23, 23, 1520, 2400, 1520, 2400)
    assert await store.usage_totals("bob") == UsageTotals(0, 0, 0)


async def test_cache_counts_must_be_non_negative(store: ConversationStore) -> None:
    from service.errors import InvalidRequest

    conversation = await store.create_conversation("alice")
    try:
        await store.append_messages("alice", conversation.id, [QUESTION, cached_reply(-1, 0)])
    except InvalidRequest:
        pass
    else:
        raise AssertionError("a negative cache count was stored")
    assert await store.messages("alice", conversation.id) == []


def test_sqlite_migration_adds_zeroed_columns_to_existing_rows(tmp_path: object) -> None:
    """A database written before the cache columns keeps its rows, each counted as uncached."""
    from pathlib import Path

    from service.store.migrations import CACHE_USAGE_VERSION, SQLITE_MIGRATIONS, apply_sqlite

    path = Path(str(tmp_path)) / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    apply_sqlite(conn, SQLITE_MIGRATIONS[: CACHE_USAGE_VERSION - 1])
    conn.execute("INSERT INTO user_usage (user_id, input_tokens) VALUES ('alice', 5)")
    apply_sqlite(conn, SQLITE_MIGRATIONS)
    row = conn.execute(
        "SELECT input_tokens, cache_creation_tokens, cache_read_tokens FROM user_usage"
    ).fetchone()
    conn.close()
    assert row == (5, 0, 0)
