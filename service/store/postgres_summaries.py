"""The PostgreSQL store's conversation summaries: their statements and rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from service.store.base import ConversationSummary, NewSummary
from service.store.postgres_rows import add_usage

# The LEFT JOIN tells a conversation without a summary from a missing one.
GET_SQL = (
    "SELECT c.id, s.text, s.covered_up_to, s.provider, s.model, s.input_tokens,"
    " s.output_tokens, s.cache_creation_tokens, s.cache_read_tokens, s.updated_at"
    " FROM conversations c LEFT JOIN conversation_summaries s ON s.conversation_id = c.id"
    " WHERE c.id = $1 AND c.user_id = $2"
)

# Kept only when the user owns the conversation and it still holds the last message
# the summary covers (a clear removed it), and only over a summary that covers less.
_SAVE_SQL = (
    "INSERT INTO conversation_summaries AS s (conversation_id, text, covered_up_to,"
    " provider, model, input_tokens, output_tokens, cache_creation_tokens,"
    " cache_read_tokens, updated_at)"
    " SELECT $1, $3, $4, $5, $6, $7, $8, $9, $10, $11"
    " WHERE EXISTS (SELECT 1 FROM conversations c JOIN messages m ON m.conversation_id = c.id"
    "  WHERE c.id = $1 AND c.user_id = $2 AND m.id = $4)"
    " ON CONFLICT (conversation_id) DO UPDATE SET"
    " text = excluded.text, covered_up_to = excluded.covered_up_to,"
    " provider = excluded.provider, model = excluded.model,"
    " input_tokens = excluded.input_tokens, output_tokens = excluded.output_tokens,"
    " cache_creation_tokens = excluded.cache_creation_tokens,"
    " cache_read_tokens = excluded.cache_read_tokens, updated_at = excluded.updated_at"
    " WHERE excluded.covered_up_to > s.covered_up_to"
    " RETURNING s.conversation_id"
)


def row_summary(row: Any) -> ConversationSummary | None:
    """The summary of a ``GET_SQL`` row (None: the conversation has none)."""
    if row["text"] is None:
        return None
    return ConversationSummary(
        conversation_id=row["id"],
        text=row["text"],
        covered_up_to=row["covered_up_to"],
        provider=row["provider"],
        model=row["model"],
        input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"],
        cache_creation_input_tokens=row["cache_creation_tokens"],
        cache_read_input_tokens=row["cache_read_tokens"],
        updated_at=row["updated_at"],
    )


async def save_summary(
    conn: Any, user_id: str, conversation_id: str, summary: NewSummary, now: datetime
) -> bool:
    """Charge the usage and keep the text if it is news, inside the caller's transaction."""
    await add_usage(
        conn,
        user_id,
        now.date(),
        (summary.input_tokens, summary.output_tokens, 0),
        (summary.cache_creation_input_tokens, summary.cache_read_input_tokens),
    )
    kept = await conn.fetchval(
        _SAVE_SQL,
        conversation_id,
        user_id,
        summary.text,
        summary.covered_up_to,
        summary.provider,
        summary.model,
        summary.input_tokens,
        summary.output_tokens,
        summary.cache_creation_input_tokens,
        summary.cache_read_input_tokens,
        now,
    )
    return kept is not None
