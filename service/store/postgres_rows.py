"""The PostgreSQL store's message queries and the decoding of its rows."""

from __future__ import annotations

from typing import Any

from service.store.base import Conversation, StoredMessage
from service.store.rows import decode_content
from service.store.window import estimate_message

MESSAGE_COLUMNS = (
    "m.id, m.role, m.content, m.status, m.provider, m.model,"
    " m.input_tokens, m.output_tokens, m.request_id, m.created_at, m.estimated_tokens,"
    " m.cache_creation_tokens, m.cache_read_tokens"
)
# Rows in the first batch of a history read; later ones are sized by RecentWindow.
RECENT_BATCH = 128
# Keyset reads on the (conversation_id, id) index. Not the LEFT JOIN of
# messages(): the planner cannot take a join's order from its inner side, so it
# would sort the whole conversation for each page. The owner check is an
# EXISTS evaluated once; the store tells an empty answer apart with a second look.
_OWNED = "EXISTS (SELECT 1 FROM conversations c WHERE c.id = $1 AND c.user_id = $2)"
RECENT_SQL = (
    f"SELECT {MESSAGE_COLUMNS} FROM messages m"  # noqa: S608
    f" WHERE m.conversation_id = $1 AND m.id < $3 AND {_OWNED} ORDER BY m.id DESC LIMIT $4"
)
PAGE_SQL = (
    f"SELECT {MESSAGE_COLUMNS} FROM messages m"  # noqa: S608
    f" WHERE m.conversation_id = $1 AND m.id > $3 AND {_OWNED} ORDER BY m.id LIMIT $4"
)


def row_conversation(row: Any) -> Conversation:
    return Conversation(
        id=row["id"],
        user_id=row["user_id"],
        title=row["title"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        message_count=row["message_count"],
    )


def row_message(conversation_id: str, row: Any) -> StoredMessage:
    blocks = decode_content(row["content"])
    estimate = row["estimated_tokens"]
    return StoredMessage(
        id=row["id"],
        conversation_id=conversation_id,
        role=row["role"],
        content=blocks,
        status=row["status"],
        provider=row["provider"],
        model=row["model"],
        input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"],
        request_id=row["request_id"],
        created_at=row["created_at"],
        # NULL: stored before migration 3, estimated now.
        estimated_tokens=estimate_message(row["role"], blocks) if estimate is None else estimate,
        cache_creation_input_tokens=row["cache_creation_tokens"],
        cache_read_input_tokens=row["cache_read_tokens"],
    )
