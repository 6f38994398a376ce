"""The PostgreSQL store through a database outage, on a private cluster this module stops.

Shows: every operation is StoreUnavailable (503 material: reason, retry hint)
while the server is down, logged once, and the same store works again when
it is back; a turn's append waits out a restart and is stored exactly once,
also when the first attempt committed but its answer was lost; connections
killed by ``pg_terminate_backend`` are replaced and the read retried.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from asyncpg import exceptions as pgerr

from service.content import TextBlock
from service.errors import Code, Reason, StoreUnavailable
from service.store import NewMessage, PostgresStore, UserProfileRecord
from tests.store.private_postgres import PrivateCluster, private_cluster

OUTAGE_LOGGER = "service.store.postgres_outage"
APP = "agent-service"  # the application_name of the store's connections


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    with private_cluster() as started:
        yield started


@pytest.fixture
async def running(cluster: PrivateCluster) -> AsyncIterator[PrivateCluster]:
    """The cluster, started again after a test that left it stopped."""
    yield cluster
    if not cluster.up:
        await asyncio.to_thread(cluster.start)


def _turn(request_id: str, text: str = "hello") -> list[NewMessage]:
    return [
        NewMessage("user", [TextBlock(text)], request_id=request_id),
        NewMessage(
            "assistant",
            [TextBlock(f"answer to {text}")],
            provider="ollama",
            model="m",
            input_tokens=3,
            output_tokens=4,
            request_id=request_id,
        ),
    ]


def _records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == OUTAGE_LOGGER and r.levelno == level]


async def test_every_operation_is_store_unavailable_while_down_and_works_after(
    running: PrivateCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=OUTAGE_LOGGER)
    async with PostgresStore(running.url, schema="outage_all", write_retry_s=0.3) as store:
        conversation = await store.create_conversation("alice")
        await store.append_messages("alice", conversation.id, _turn("r1"))

        await asyncio.to_thread(running.stop)
        operations: dict[str, Any] = {
            "create_conversation": lambda: store.create_conversation("alice"),
            "get_conversation": lambda: store.get_conversation("alice", conversation.id),
            "current_conversation": lambda: store.current_conversation("alice"),
            "list_conversations": lambda: store.list_conversations("alice", 10),
            "messages": lambda: store.messages("alice", conversation.id),
            "recent_messages": lambda: store.recent_messages("alice", conversation.id, 1000),
            "messages_page": lambda: store.messages_page("alice", conversation.id, 10),
            "append_messages": lambda: store.append_messages("alice", conversation.id, _turn("r2")),
            "clear_conversation": lambda: store.clear_conversation("alice", conversation.id),
            "delete_conversation": lambda: store.delete_conversation("alice", conversation.id),
            "usage_totals": lambda: store.usage_totals("alice"),
            "token_spend": lambda: store.token_spend("alice", datetime.now(UTC).date()),
            "count_users": lambda: store.count_users(),
            "get_profile": lambda: store.get_profile("alice"),
            "put_profile": lambda: store.put_profile(UserProfileRecord("alice", "A", "")),
        }
        for name, call in operations.items():
            with pytest.raises(StoreUnavailable) as caught:
                await call()
            error = caught.value
            assert error.code is Code.UNAVAILABLE, name
            assert error.reason is Reason.STORE_UNAVAILABLE, name
            assert error.retry_after_s is not None and error.retry_after_s > 0, name
            assert str(running.port) not in error.message, name  # the address stays in the log
        assert not await store.ping()
        outage_logs = _records(caplog, logging.ERROR)
        assert len(outage_logs) == 1, [r.getMessage() for r in outage_logs]
        assert "unavailable" in outage_logs[0].getMessage()
        assert not _records(caplog, logging.WARNING)  # not back yet

        await asyncio.to_thread(running.start)
        # The same store, never reopened: the pool reconnects.
        stored = await store.messages("alice", conversation.id)
        assert [m.request_id for m in stored] == ["r1", "r1"]
        await store.append_messages("alice", conversation.id, _turn("r3"))
        assert len(await store.messages("alice", conversation.id)) == 4
        assert len(_records(caplog, logging.ERROR)) == 1
        back = _records(caplog, logging.WARNING)
        assert len(back) == 1 and "available again" in back[0].getMessage()


async def test_a_turns_append_waits_out_a_restart_and_is_stored_once(
    running: PrivateCluster,
) -> None:
    async with PostgresStore(running.url, schema="outage_wait", write_retry_s=60) as store:
        conversation = await store.create_conversation("bob")
        await asyncio.to_thread(running.stop)
        append = asyncio.create_task(
            store.append_messages("bob", conversation.id, _turn("streamed", "while down"))
        )
        while not store.outage.down:  # its first attempt failed: it is waiting now
            assert not append.done(), append
            await asyncio.sleep(0.01)
        await asyncio.to_thread(running.start)
        stored = await append
        assert [m.role for m in stored] == ["user", "assistant"]
        rows = await store.messages("bob", conversation.id)
        assert [(m.role, m.request_id) for m in rows] == [
            ("user", "streamed"),
            ("assistant", "streamed"),
        ]
        assert (await store.usage_totals("bob")).output_tokens == 4
        assert not store.outage.down


class _AnswerLost:
    """Wraps the store's pool: the first connection breaks after its work, as if the
    server committed and went away before the answer arrived."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self.broken = 0

    def acquire(self) -> Any:
        outer = self

        class _Use:
            async def __aenter__(self) -> Any:
                self._cm = outer._pool.acquire()
                return await self._cm.__aenter__()

            async def __aexit__(self, *exc: Any) -> None:
                await self._cm.__aexit__(*exc)
                if exc[0] is None and outer.broken == 0:
                    outer.broken += 1
                    raise pgerr.ConnectionDoesNotExistError(
                        "connection was closed in the middle of operation"
                    )

        return _Use()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


async def test_an_append_whose_commit_answer_was_lost_is_not_stored_twice(
    running: PrivateCluster,
) -> None:
    async with PostgresStore(running.url, schema="outage_lost", write_retry_s=10) as store:
        conversation = await store.create_conversation("carol")
        lossy = _AnswerLost(store._pool)
        store._pool = lossy
        try:
            stored = await store.append_messages("carol", conversation.id, _turn("once"))
        finally:
            store._pool = lossy._pool
        assert lossy.broken == 1  # the first attempt did commit, then "lost" its answer
        assert [m.request_id for m in stored] == ["once", "once"]
        rows = await store.messages("carol", conversation.id)
        assert len(rows) == 2, [(m.role, m.request_id) for m in rows]
        assert [m.id for m in rows] == [m.id for m in stored]
        assert (await store.get_conversation("carol", conversation.id)).message_count == 2


async def test_killed_connections_are_replaced_and_the_read_retried(
    running: PrivateCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=OUTAGE_LOGGER)
    async with PostgresStore(running.url, schema="outage_kill", min_size=2, max_size=2) as store:
        conversation = await store.create_conversation("dave")
        await store.append_messages("dave", conversation.id, _turn("k1"))
        # Blocking: the event loop does not run, so the pool cannot notice the
        # deaths before the next read picks one of the killed connections.
        assert running.terminate_sessions(APP) >= 1
        rows = await store.messages("dave", conversation.id)
        assert [m.request_id for m in rows] == ["k1", "k1"]
        running.terminate_sessions(APP)
        assert (await store.get_conversation("dave", conversation.id)).message_count == 2
        assert not _records(caplog, logging.ERROR)  # a replaced connection is no outage
