"""The PostgreSQL store's message queries and the decoding of its rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from service.store.base import Conversation, NewMessage, StoredMessage
from service.store.rows import (
    batch_cache_usage,
    batch_usage,
    decode_content,
    encode_content,
    not_found,
    stored_message,
    title_from,
)
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
# The messages one turn stored (its request id), to recognise an append that already landed.
STORED_TURN_SQL = (
    f"SELECT {MESSAGE_COLUMNS} FROM messages m"  # noqa: S608
    f" WHERE m.conversation_id = $1 AND m.request_id = $3 AND {_OWNED} ORDER BY m.id"
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


@dataclass(frozen=True, slots=True)
class Batch:
    """Messages to append to one conversation in one transaction, stamped once."""

    user_id: str
    conversation_id: str
    messages: tuple[NewMessage, ...]
    now: datetime
    create: bool = False  # create the conversation first if it does not exist

    def request_id(self) -> str:
        """The request id every message shares ("" when they do not share one)."""
        ids = {m.request_id for m in self.messages}
        return ids.pop() if len(ids) == 1 else ""


async def insert_batch(conn: Any, batch: Batch) -> list[StoredMessage]:
    """Append ``batch`` inside the caller's transaction; NotFound unless the user owns it."""
    user_id, conversation_id = batch.user_id, batch.conversation_id
    messages, now = batch.messages, batch.now
    contents = [encode_content(m.content) for m in messages]
    estimates = [estimate_message(m.role, m.content) for m in messages]
    if batch.create:
        await conn.execute(
            "INSERT INTO conversations (id, user_id, title, created_at, updated_at,"
            " message_count, activity)"
            " VALUES ($1, $2, '', $3, $3, 0, nextval('conversation_activity'))"
            " ON CONFLICT (id) DO NOTHING",
            conversation_id,
            user_id,
            now,
        )
    # Updating the conversation first locks its row, so concurrent
    # appends and clears of one conversation take turns.
    touched = await conn.fetchval(
        "UPDATE conversations SET updated_at = $1,"
        " activity = nextval('conversation_activity'),"
        " message_count = message_count + $2,"
        " title = CASE WHEN title = '' THEN $3 ELSE title END"
        " WHERE id = $4 AND user_id = $5 RETURNING id",
        now,
        len(messages),
        title_from(messages),
        conversation_id,
        user_id,
    )
    if touched is None:
        raise not_found(conversation_id)
    # One statement for the whole batch, in order.
    rows = await conn.fetch(
        "INSERT INTO messages (conversation_id, role, content, status, provider, model,"
        " input_tokens, output_tokens, request_id, created_at, estimated_tokens,"
        " cache_creation_tokens, cache_read_tokens)"
        " SELECT $1, t.role, t.content, t.status, t.provider, t.model,"
        " t.input_tokens, t.output_tokens, t.request_id, $2, t.estimated_tokens,"
        " t.cache_creation_tokens, t.cache_read_tokens"
        " FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[],"
        " $8::bigint[], $9::bigint[], $10::text[], $11::integer[], $12::bigint[],"
        " $13::bigint[])"
        " WITH ORDINALITY AS t(role, content, status, provider, model,"
        " input_tokens, output_tokens, request_id, estimated_tokens,"
        " cache_creation_tokens, cache_read_tokens, n)"
        " ORDER BY t.n RETURNING id",
        conversation_id,
        now,
        [m.role for m in messages],
        contents,
        [m.status for m in messages],
        [m.provider for m in messages],
        [m.model for m in messages],
        [m.input_tokens for m in messages],
        [m.output_tokens for m in messages],
        [m.request_id for m in messages],
        estimates,
        [m.cache_creation_input_tokens for m in messages],
        [m.cache_read_input_tokens for m in messages],
    )
    await add_usage(conn, user_id, now.date(), batch_usage(messages), batch_cache_usage(messages))
    # Identity values follow the insertion order; RETURNING's order is unspecified.
    ids = sorted(row["id"] for row in rows)
    return [
        stored_message(message_id, conversation_id, m, now, estimate)
        for message_id, m, estimate in zip(ids, messages, estimates, strict=True)
    ]


async def add_usage(
    conn: Any, user_id: str, day: date, totals: tuple[int, int, int], cached: tuple[int, int]
) -> None:
    """Add (input, output, turns) and (cache writes, cache reads) to the user's totals
    and the day's spend, inside the caller's transaction."""
    if any(totals) or any(cached):
        await conn.execute(
            "INSERT INTO user_usage AS u (user_id, input_tokens, output_tokens, turns,"
            " cache_creation_tokens, cache_read_tokens)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id) DO UPDATE SET"
            " input_tokens = u.input_tokens + excluded.input_tokens,"
            " output_tokens = u.output_tokens + excluded.output_tokens,"
            " turns = u.turns + excluded.turns,"
            " cache_creation_tokens = u.cache_creation_tokens"
            " + excluded.cache_creation_tokens,"
            " cache_read_tokens = u.cache_read_tokens + excluded.cache_read_tokens",
            user_id,
            *totals,
            *cached,
        )
    if totals[0] + totals[1] or any(cached):
        await conn.execute(
            "INSERT INTO token_spend AS s"
            " (user_id, day, tokens, cache_creation_tokens, cache_read_tokens)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, day) DO UPDATE SET"
            " tokens = s.tokens + excluded.tokens,"
            " cache_creation_tokens = s.cache_creation_tokens"
            " + excluded.cache_creation_tokens,"
            " cache_read_tokens = s.cache_read_tokens + excluded.cache_read_tokens",
            user_id,
            day,
            totals[0] + totals[1],
            *cached,
        )
