"""ConversationStore on PostgreSQL, through an asyncpg connection pool."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from datetime import date
from typing import Any

import asyncpg

from service.errors import StoreUnavailable
from service.store import postgres_summaries as summaries
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
from service.store.migrations import POSTGRES_MIGRATIONS, Migration, apply_postgres
from service.store.postgres_outage import PoolRunner, Retry, StoreOutage
from service.store.postgres_rows import (
    MESSAGE_COLUMNS,
    PAGE_SQL,
    RECENT_BATCH,
    RECENT_SQL,
    STORED_TURN_SQL,
    Batch,
    insert_batch,
    row_conversation,
    row_message,
)
from service.store.rows import (
    MAX_PAGE_SIZE,
    check_batch,
    check_ids,
    check_page_size,
    check_summary,
    check_text,
    check_user_id,
    decode_page_token,
    encode_page_token,
    new_conversation_id,
    not_found,
    utc_now,
)
from service.store.window import (
    RecentWindow,
    decode_message_token,
    encode_message_token,
)

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_PING_TIMEOUT_S = 2.0
# Connecting to a server that does not answer (a dropped route) must fail fast, not in 60 s.
_CONNECT_TIMEOUT_S = 5.0
_NO_CURSOR = 2**63 - 1


class PostgresStore(ConversationStore):
    """The shared-deployment store: PostgreSQL through an asyncpg pool.

    ``schema``, when given, is created if missing and becomes the pool's
    search_path, so several stores (for example parallel test runs) can
    share one database without seeing each other's tables.

    Through an outage (see ``postgres_outage``) every operation that cannot
    reach the database raises ``StoreUnavailable``; connections the server
    killed are replaced and reads retried; a turn's append keeps trying for
    ``write_retry_s`` (it is keyed by its request id, so it is never stored twice).
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        min_size: int = 1,
        max_size: int = 10,
        migrations: Sequence[Migration] = POSTGRES_MIGRATIONS,
        write_retry_s: float = 20.0,
        outage: StoreOutage | None = None,
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
        self.outage = outage or StoreOutage()
        self._runner = PoolRunner(self._db, self.outage, write_retry_s=write_retry_s)

    @property
    def write_retry_s(self) -> float:
        """How long a turn's append waits out an outage before giving up (StoreUnavailable)."""
        return self._runner.write_retry_s

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
            # Opened warm, but no connection floor: asyncpg would restore it in the
            # background through an outage, logging a traceback every second.
            # Connections are made when an operation needs one.
            init_size=self._min_size,
            min_size=0,
            max_size=self._max_size,
            server_settings=settings,
            timeout=_CONNECT_TIMEOUT_S,
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
        return int(await self._fetchval("SELECT MAX(version) FROM schema_migrations") or 0)

    # --- conversations ------------------------------------------------------

    async def create_conversation(self, user_id: str, title: str = "") -> Conversation:
        check_user_id(user_id)
        check_text("title", title)
        conversation_id, now = new_conversation_id(), utc_now()
        # The id is new and random: a rerun after a lost connection finds its own row.
        await self._execute(
            "INSERT INTO conversations (id, user_id, title, created_at, updated_at,"
            " message_count, activity)"
            " VALUES ($1, $2, $3, $4, $4, 0, nextval('conversation_activity'))"
            " ON CONFLICT (id) DO NOTHING",
            conversation_id,
            user_id,
            title,
            now,
        )
        return Conversation(conversation_id, user_id, title, now, now, 0)

    async def get_conversation(self, user_id: str, conversation_id: str) -> Conversation:
        check_ids(user_id, conversation_id)
        row = await self._fetchrow(
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
        rows = await self._fetch(
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
        # Not rerun after a lost answer: a second run would report NotFound for a success.
        deleted = await self._runner.run(
            lambda conn: conn.fetchval(
                "DELETE FROM conversations WHERE id = $1 AND user_id = $2 RETURNING id",
                conversation_id,
                user_id,
            ),
            Retry.UNSENT,
        )
        if deleted is None:
            raise not_found(conversation_id)

    # --- messages -----------------------------------------------------------

    async def messages(self, user_id: str, conversation_id: str) -> list[StoredMessage]:
        check_ids(user_id, conversation_id)
        # One query: see SqliteStore.messages for the LEFT JOIN's meaning.
        rows = await self._fetch(
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
            rows = await self._fetch(RECENT_SQL, conversation_id, user_id, before, limit)
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
        rows = await self._fetch(PAGE_SQL, conversation_id, user_id, after, limit + 1)
        if not rows:
            await self._check_owner(user_id, conversation_id)
        page = [row_message(conversation_id, row) for row in rows[:limit]]
        token = encode_message_token(conversation_id, page[-1].id) if len(rows) > limit else ""
        return page, token

    async def _check_owner(self, user_id: str, conversation_id: str) -> None:
        """NotFound unless the conversation exists and is the user's."""
        owned = await self._fetchval(
            "SELECT 1 FROM conversations WHERE id = $1 AND user_id = $2", conversation_id, user_id
        )
        if owned is None:
            raise not_found(conversation_id)

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
        batch = Batch(user_id, conversation_id, tuple(messages), utc_now(), create)

        async def first(conn: Any) -> list[StoredMessage]:
            async with conn.transaction():
                return await insert_batch(conn, batch)

        request_id = batch.request_id()
        if not request_id:  # nothing to recognise an earlier attempt by: never rerun
            return await self._runner.run(first, Retry.UNSENT)

        async def again(conn: Any) -> list[StoredMessage]:
            # The connection broke under an earlier attempt, maybe after its COMMIT
            # arrived: the turn's request id tells whether it is stored already.
            async with conn.transaction():
                rows = await conn.fetch(STORED_TURN_SQL, conversation_id, user_id, request_id)
                if rows:
                    return [row_message(conversation_id, row) for row in rows]
                return await insert_batch(conn, batch)

        # A turn's final write: its answer has been streamed, so wait out a short outage.
        return await self._runner.run_until(first, again)

    async def clear_conversation(self, user_id: str, conversation_id: str) -> int:
        check_ids(user_id, conversation_id)

        async def clear(conn: Any) -> int:
            async with conn.transaction():
                touched = await conn.fetchval(
                    "UPDATE conversations SET message_count = 0"
                    " WHERE id = $1 AND user_id = $2 RETURNING id",
                    conversation_id,
                    user_id,
                )
                if touched is None:
                    raise not_found(conversation_id)
                # What the summary stands for is gone with the messages.
                await conn.execute(
                    "DELETE FROM conversation_summaries WHERE conversation_id = $1",
                    conversation_id,
                )
                deleted = await conn.fetchval(
                    "WITH gone AS (DELETE FROM messages WHERE conversation_id = $1 RETURNING 1)"
                    " SELECT count(*) FROM gone",
                    conversation_id,
                )
            return int(deleted)

        # A rerun after a lost COMMIT would answer 0 for what the first run removed.
        return await self._runner.run(clear, Retry.UNSENT)

    async def get_summary(self, user_id: str, conversation_id: str) -> ConversationSummary | None:
        check_ids(user_id, conversation_id)
        row = await self._fetchrow(summaries.GET_SQL, conversation_id, user_id)
        if row is None:
            raise not_found(conversation_id)
        return summaries.row_summary(row)

    async def save_summary(self, user_id: str, conversation_id: str, summary: NewSummary) -> bool:
        check_ids(user_id, conversation_id)
        check_summary(summary)
        now = utc_now()

        async def save(conn: Any) -> bool:
            async with conn.transaction():
                return await summaries.save_summary(conn, user_id, conversation_id, summary, now)

        # Not rerun after a lost answer: a second run would charge the usage twice.
        return await self._runner.run(save, Retry.UNSENT)

    # --- users ----------------------------------------------------------------

    async def usage_totals(self, user_id: str) -> UsageTotals:
        check_user_id(user_id)
        row = await self._fetchrow(
            "SELECT input_tokens, output_tokens, turns, cache_creation_tokens, cache_read_tokens"
            " FROM user_usage WHERE user_id = $1",
            user_id,
        )
        if row is None:
            return UsageTotals(0, 0, 0)
        return UsageTotals(*(int(value) for value in row.values()))

    async def token_spend(self, user_id: str, day: date) -> TokenSpend:
        check_user_id(user_id)
        row = await self._fetchrow(
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
        return int(await self._fetchval("SELECT COUNT(DISTINCT user_id) FROM conversations"))

    async def get_profile(self, user_id: str) -> UserProfileRecord | None:
        check_user_id(user_id)
        row = await self._fetchrow(
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
        await self._execute(  # an upsert of the same values: safe to run twice
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
        if self._pool is None:
            return False
        try:
            async with asyncio.timeout(_PING_TIMEOUT_S):
                # Through the runner: a ping notices (and logs) an outage and its end
                # even when no request touches the store.
                await self._fetchval("SELECT 1")
        except (StoreUnavailable, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False
        return True

    # --- statements through the outage runner ------------------------------------

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        return await self._runner.run(lambda conn: conn.fetch(sql, *args))

    async def _fetchrow(self, sql: str, *args: Any) -> Any:
        return await self._runner.run(lambda conn: conn.fetchrow(sql, *args))

    async def _fetchval(self, sql: str, *args: Any) -> Any:
        return await self._runner.run(lambda conn: conn.fetchval(sql, *args))

    async def _execute(self, sql: str, *args: Any) -> None:
        """A write that is safe to run twice (callers make sure of it)."""
        await self._runner.run(lambda conn: conn.execute(sql, *args))

    def _db(self) -> Any:
        if self._pool is None:
            raise RuntimeError("the PostgreSQL store is not open")
        return self._pool
