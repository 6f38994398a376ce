"""The SQLite store's conversation summaries, as plain functions on its connection.

Like ``sqlite_ops``: each function is one whole store operation, run on the
store's thread in one hop; inputs arrive validated.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime

from service.store.base import ConversationSummary, NewSummary
from service.store.rows import not_found
from service.store.sqlite_ops import add_usage, immediate

_COLUMNS = (
    "text, covered_up_to, provider, model, input_tokens, output_tokens,"
    " cache_creation_tokens, cache_read_tokens, updated_at"
)

# Kept only when the user owns the conversation and it still holds the last message
# the summary covers (a clear removed it), and only over a summary that covers less.
_SAVE_SQL = (
    f"INSERT INTO conversation_summaries (conversation_id, {_COLUMNS})"  # noqa: S608
    " SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?"
    " WHERE EXISTS (SELECT 1 FROM conversations c JOIN messages m ON m.conversation_id = c.id"
    "  WHERE c.id = ? AND c.user_id = ? AND m.id = ?)"
    " ON CONFLICT (conversation_id) DO UPDATE SET"
    " text = excluded.text, covered_up_to = excluded.covered_up_to,"
    " provider = excluded.provider, model = excluded.model,"
    " input_tokens = excluded.input_tokens, output_tokens = excluded.output_tokens,"
    " cache_creation_tokens = excluded.cache_creation_tokens,"
    " cache_read_tokens = excluded.cache_read_tokens, updated_at = excluded.updated_at"
    " WHERE excluded.covered_up_to > conversation_summaries.covered_up_to"
    " RETURNING conversation_id"
)


def get_summary(
    conn: sqlite3.Connection, user_id: str, conversation_id: str
) -> ConversationSummary | None:
    # The LEFT JOIN tells a conversation without a summary from a missing one.
    row = conn.execute(
        "SELECT c.id, s.text, s.covered_up_to, s.provider, s.model, s.input_tokens,"
        " s.output_tokens, s.cache_creation_tokens, s.cache_read_tokens, s.updated_at"
        " FROM conversations c LEFT JOIN conversation_summaries s ON s.conversation_id = c.id"
        " WHERE c.id = ? AND c.user_id = ?",
        (conversation_id, user_id),
    ).fetchone()
    if row is None:
        raise not_found(conversation_id)
    if row[1] is None:
        return None
    text, covered, provider, model, tokens_in, tokens_out, cache_creation, cache_read = row[1:9]
    return ConversationSummary(
        conversation_id=conversation_id,
        text=text,
        covered_up_to=covered,
        provider=provider,
        model=model,
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        cache_creation_input_tokens=cache_creation,
        cache_read_input_tokens=cache_read,
        updated_at=datetime.fromisoformat(row[9]),
    )


def save_summary(
    conn: sqlite3.Connection,
    user_id: str,
    conversation_id: str,
    summary: NewSummary,
    now: datetime,
) -> bool:
    with immediate(conn):
        add_usage(
            conn,
            user_id,
            now.date(),
            (summary.input_tokens, summary.output_tokens, 0),
            (summary.cache_creation_input_tokens, summary.cache_read_input_tokens),
        )
        kept = conn.execute(
            _SAVE_SQL,
            (
                conversation_id,
                summary.text,
                summary.covered_up_to,
                summary.provider,
                summary.model,
                summary.input_tokens,
                summary.output_tokens,
                summary.cache_creation_input_tokens,
                summary.cache_read_input_tokens,
                now.isoformat(),
                conversation_id,
                user_id,
                summary.covered_up_to,
            ),
        ).fetchall()
    return bool(kept)
