"""ConversationStore on PostgreSQL, through an asyncpg connection pool."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from datetime import date
from typing import Any

import asyncpg

from service.store.base import (
    Conversation,
    ConversationStore,
    NewMessage,
    StoredMessage,
    TokenSpend,
    UsageTotals,
    UserProfileRecord,
)
from service.store.migrations import POSTGRES_MIGRATIONS, Migration, apply_postgres
from service.store.postgres_rows import (
    MESSAGE_COLUMNS,
    PAGE_SQL,
    RECENT_BATCH,
    RECENT_SQL,
    row_conversation,
    row_message,
)
from service.store.rows import (
    MAX_PAGE_SIZE,
    batch_cache_usage,
    batch_usage,
    check_batch,
    check_ids,
    check_page_size,
    check_text,
    check_user_id,
    decode_page_token,
    encode_content,
    encode_page_token,
    new_conversation_id,
    not_found,
    stored_message,
    title_from,
    utc_now,
)
from service.store.window import (
    RecentWindow,
    decode_message_token,
    encode_message_token,
    estimate_message,
)

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_PING_TIMEOUT_S = 2.0
_NO_CURSOR = 2**63 - 1


class PostgresStore(ConversationStore):
    """The shared-deployment store: PostgreSQL through an asyncpg pool.

    ``schema``, when given, is created if missing and becomes the pool's
    search_path, so several stores (for example parallel test runs) can
    share one database without seeing each other's tables.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        min_size: int = 1,
        max_size: int = 10,
        migrations: Sequence[Migration] = POSTGRES_MIGRATIONS,
    ) -> None:
        if schema is not None and not _SCHEMA_NAME.fullmatch(schema):
            raise ValueError(
                f"schema {schema!r} must be a lower-case identifier (letters, digits, _)"
            )
        self.schema = schema
        self._dsn = dsn
        self._min_size = min_size
        self._max_size = max_size
        self._migrations = tuple(migrations)
        self._pool: Any = None
        self._opening = asyncio.Lock()

    async def open(self) -> None:
        async with self._opening:
            if self._pool is None:
                self._pool = await self._connect()

    async def _connect(self) -> Any:
        settings = {"application_name": "agent-service"}
        if self.schema:
            settings["search_path"] = self.schema
        pool = await asyncpg.create_pool(
            self._dsn,
            min_size=self._min_size,
            max_size=self._max_size,
            server_settings=settings,
        )
        try:
            async with pool.acquire() as conn, conn.transaction():
                await apply_postgres(conn, self._migrations, self.schema)
        except BaseException:
            await pool.close()
            raise
        return pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def schema_version(self) -> int:
        return int(await self._db().fetchval("SELECT MAX(version) FROM schema_migrations") or 0)

    # --- conversations ------------------------------------------------------

    async def create_conversation(self, user_id: str, title: str = "") -> Conversation:
        check_user_id(user_id)
        check_text("title", title)
        conversation_id, now = new_conversation_id(), utc_now()
        await self._db().execute(
            "INSERT INTO conversations (id, user_id, title, created_at, updated_at,"
            " message_count, activity)"
            " VALUES ($1, $2, $3, $4, $4, 0, nextval('conversation_activity'))",
            conversation_id,
            user_id,
            title,
            now,
        )
        return Conversation(conversation_id, user_id, title, now, now, 0)

    async def get_conversation(self, user_id: str, conversation_id: str) -> Conversation:
        check_ids(user_id, conversation_id)
        row = await self._db().fetchrow(
            "SELECT id, user_id, title, created_at, updated_at, message_count"
            " FROM conversations WHERE id = $1 AND user_id = $2",
            conversation_id,
            user_id,
        )
        if row is None:
            raise not_found(conversation_id)
        return row_conversation(row)

    async def current_conversation(self, user_id: str) -> Conversation | None:
        page, _ = await self.list_conversations(user_id, 1)
        return page[0] if page else None

    async def list_conversations(
        self, user_id: str, page_size: int, page_token: str = ""
    ) -> tuple[list[Conversation], str]:
        check_user_id(user_id)
        limit = check_page_size(page_size)
        before = decode_page_token(page_token) or _NO_CURSOR
        rows = await self._db().fetch(
            "SELECT id, user_id, title, created_at, updated_at, message_count, activity"
            " FROM conversations WHERE user_id = $1 AND activity < $2"
            " ORDER BY activity DESC LIMIT $3",
            user_id,
            before,
            limit + 1,
        )
        more = len(rows) > limit
        rows = rows[:limit]
        token = encode_page_token(rows[-1]["activity"]) if more else ""
        return [row_conversation(row) for row in rows], token

    async def delete_conversation(self, user_id: str, conversation_id: str) -> None:
        check_ids(user_id, conversation_id)
        deleted = await self._db().fetchval(
            "DELETE FROM conversations WHERE id = $1 AND user_id = $2 RETURNING id",
            conversation_id,
            user_id,
        )
        if deleted is None:
            raise not_found(conversation_id)

    # --- messages -----------------------------------------------------------

    async def messages(self, user_id: str, conversation_id: str) -> list[StoredMessage]:
        check_ids(user_id, conversation_id)
        # One query: see SqliteStore.messages for the LEFT JOIN's meaning.
        rows = await self._db().fetch(
            f"SELECT {MESSAGE_COLUMNS}"  # noqa: S608
            " FROM conversations c LEFT JOIN messages m ON m.conversation_id = c.id"
            " WHERE c.id = $1 AND c.user_id = $2 ORDER BY m.id",
            conversation_id,
            user_id,
        )
        if not rows:
            raise not_found(conversation_id)
        return [row_message(conversation_id, row) for row in rows if row["id"] is not None]

    async def recent_messages(
        self, user_id: str, conversation_id: str, budget_tokens: int
    ) -> list[StoredMessage]:
        check_ids(user_id, conversation_id)
        window = RecentWindow(budget_tokens)
        before, limit = _NO_CURSOR, RECENT_BATCH
        # Newest first, in keyset batches sized by what the window still
        # wants: a typical window is one round trip, a long one two or three,
        # and few rows past its edge are read.
        while True:
            rows = await self._db().fetch(RECENT_SQL, conversation_id, user_id, before, limit)
            if not rows and before == _NO_CURSOR:
                await self._check_owner(user_id, conversation_id)
            for row in rows:
                if not window.offer(row_message(conversation_id, row)):
                    return window.messages()
            if len(rows) < limit:
                return window.messages()
            before, limit = rows[-1]["id"], window.rows_wanted(MAX_PAGE_SIZE)

    async def messages_page(
        self, user_id: str, conversation_id: str, page_size: int, page_token: str = ""
    ) -> tuple[list[StoredMessage], str]:
        check_ids(user_id, conversation_id)
        limit = check_page_size(page_size)
        after = decode_message_token(conversation_id, page_token)
        rows = await self._db().fetch(PAGE_SQL, conversation_id, user_id, after, limit + 1)
        if not rows:
            await self._check_owner(user_id, conversation_id)
        page = [row_message(conversation_id, row) for row in rows[:limit]]
        token = encode_message_token(conversation_id, page[-1].id) if len(rows) > limit else ""
        return page, token

    async def _check_owner(self, user_id: str, conversation_id: str) -> None:
        """NotFound unless the conversation exists and is the user's."""
        owned = await self._db().fetchval(
            "SELECT 1 FROM conversations WHERE id = $1 AND user_id = $2", conversation_id, user_id
        )
        if owned is None:
            raise not_found(conversation_id)

    async def append_messages(
        self, user_id: str, conversation_id: str, messages: Sequence[NewMessage]
    ) -> list[StoredMessage]:
        check_ids(user_id, conversation_id)
        check_batch(messages)
        contents = [encode_content(m.content) for m in messages]
        estimates = [estimate_message(m.role, m.content) for m in messages]
        now = utc_now()
        async with self._db().acquire() as conn, conn.transaction():
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
            totals, cached = batch_usage(messages), batch_cache_usage(messages)
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
                    now.date(),
                    totals[0] + totals[1],
                    *cached,
                )
        # Identity values follow the insertion order; RETURNING's order is unspecified.
        ids = sorted(row["id"] for row in rows)
        return [
            stored_message(message_id, conversation_id, m, now, estimate)
            for message_id, m, estimate in zip(ids, messages, estimates, strict=True)
        ]

    async def clear_conversation(self, user_id: str, conversation_id: str) -> int:
        check_ids(user_id, conversation_id)
        async with self._db().acquire() as conn, conn.transaction():
            touched = await conn.fetchval(
                "UPDATE conversations SET message_count = 0"
                " WHERE id = $1 AND user_id = $2 RETURNING id",
                conversation_id,
                user_id,
            )
            if touched is None:
                raise not_found(conversation_id)
            deleted = await conn.fetchval(
                "WITH gone AS (DELETE FROM messages WHERE conversation_id = $1 RETURNING 1)"
                " SELECT count(*) FROM gone",
                conversation_id,
            )
        return int(deleted)

    # --- users ----------------------------------------------------------------

    async def usage_totals(self, user_id: str) -> UsageTotals:
        check_user_id(user_id)
        row = await self._db().fetchrow(
            "SELECT input_tokens, output_tokens, turns, cache_creation_tokens, cache_read_tokens"
            " FROM user_usage WHERE user_id = $1",
            user_id,
        )
        if row is None:
            return UsageTotals(0, 0, 0)
        return UsageTotals(*(int(value) for value in row.values()))

    async def token_spend(self, user_id: str, day: date) -> TokenSpend:
        check_user_id(user_id)
        row = await self._db().fetchrow(
            "SELECT COALESCE(SUM(tokens) FILTER (WHERE day = $2), 0),"
            " COALESCE(SUM(tokens), 0),"
            " COALESCE(SUM(cache_creation_tokens) FILTER (WHERE day = $2), 0),"
            " COALESCE(SUM(cache_read_tokens) FILTER (WHERE day = $2), 0),"
            " COALESCE(SUM(cache_creation_tokens), 0), COALESCE(SUM(cache_read_tokens), 0)"
            " FROM token_spend WHERE user_id = $1 AND day BETWEEN $3 AND $2",
            user_id,
            day,
            day.replace(day=1),
        )
        return TokenSpend(*(int(value) for value in row.values()))

    async def count_users(self) -> int:
        return int(await self._db().fetchval("SELECT COUNT(DISTINCT user_id) FROM conversations"))

    async def get_profile(self, user_id: str) -> UserProfileRecord | None:
        check_user_id(user_id)
        row = await self._db().fetchrow(
            "SELECT display_name, system_prompt FROM user_profiles WHERE user_id = $1",
            user_id,
        )
        if row is None:
            return None
        return UserProfileRecord(user_id, row["display_name"], row["system_prompt"])

    async def put_profile(self, profile: UserProfileRecord) -> None:
        check_user_id(profile.user_id)
        check_text("display_name", profile.display_name)
        check_text("system_prompt", profile.system_prompt)
        await self._db().execute(
            "INSERT INTO user_profiles (user_id, display_name, system_prompt, updated_at)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (user_id) DO UPDATE SET"
            " display_name = excluded.display_name,"
            " system_prompt = excluded.system_prompt, updated_at = excluded.updated_at",
            profile.user_id,
            profile.display_name,
            profile.system_prompt,
            utc_now(),
        )

    async def ping(self) -> bool:
        pool = self._pool
        if pool is None:
            return False
        try:
            async with asyncio.timeout(_PING_TIMEOUT_S):
                await pool.fetchval("SELECT 1")
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False
        return True

    def _db(self) -> Any:
        if self._pool is None:
            raise RuntimeError("the PostgreSQL store is not open")
        return self._pool
