"""Contract: a conversation's summary (history.summarize), kept with it and charged to its user."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from service.content import TextBlock
from service.errors import InvalidRequest, NotFound
from service.store import ConversationStore, NewMessage
from service.store.base import NewSummary, TokenSpend, UsageTotals
from service.store.rows import utc_now
from tests.store.conftest import Backend

QUESTION = NewMessage(role="user", content=[TextBlock("q")])
ANSWER = NewMessage(role="assistant", content=[TextBlock("a")], input_tokens=4, output_tokens=2)


def summary(text: str, covered_up_to: int, **usage: int) -> NewSummary:
    return NewSummary(text, covered_up_to, provider="ollama", model="llama3.2", **usage)


async def conversation_with_turns(store: ConversationStore, turns: int) -> tuple[str, list[int]]:
    conversation = await store.create_conversation("alice")
    ids = []
    for _ in range(turns):
        stored = await store.append_messages("alice", conversation.id, [QUESTION, ANSWER])
        ids += [m.id for m in stored]
    return conversation.id, ids


async def test_a_conversation_has_no_summary_until_one_is_saved(store: ConversationStore) -> None:
    conversation, ids = await conversation_with_turns(store, 2)
    assert await store.get_summary("alice", conversation) is None
    kept = await store.save_summary(
        "alice", conversation, summary("Alice asked twice.", ids[1], input_tokens=30)
    )
    assert kept
    found = await store.get_summary("alice", conversation)
    assert found is not None
    assert (found.conversation_id, found.text, found.covered_up_to) == (
        conversation,
        "Alice asked twice.",
        ids[1],
    )
    assert (found.provider, found.model, found.input_tokens, found.output_tokens) == (
        "ollama",
        "llama3.2",
        30,
        0,
    )
    assert abs((utc_now() - found.updated_at).total_seconds()) < 60
    # The messages are as they were: a summary is not a message.
    assert len(await store.messages("alice", conversation)) == 4


async def test_only_a_summary_that_covers_more_replaces_the_kept_one(
    store: ConversationStore,
) -> None:
    conversation, ids = await conversation_with_turns(store, 3)
    assert await store.save_summary("alice", conversation, summary("up to turn 2", ids[3]))
    assert not await store.save_summary("alice", conversation, summary("up to turn 1", ids[1]))
    assert not await store.save_summary("alice", conversation, summary("again turn 2", ids[3]))
    found = await store.get_summary("alice", conversation)
    assert found is not None and found.text == "up to turn 2"
    assert await store.save_summary("alice", conversation, summary("up to turn 3", ids[5]))
    found = await store.get_summary("alice", conversation)
    assert found is not None and (found.text, found.covered_up_to) == ("up to turn 3", ids[5])


async def test_every_summary_request_is_charged_to_the_user_but_is_not_a_turn(
    store: ConversationStore,
) -> None:
    today = utc_now().date()
    conversation, ids = await conversation_with_turns(store, 2)  # 2 turns: 8 in, 4 out
    usage = {"input_tokens": 100, "output_tokens": 20, "cache_read_input_tokens": 50}
    assert await store.save_summary("alice", conversation, summary("s", ids[3], **usage))
    # Not kept (it covers no more), yet the provider was paid for it: charged all the same.
    assert not await store.save_summary("alice", conversation, summary("s", ids[1], **usage))
    assert await store.usage_totals("alice") == UsageTotals(208, 44, 2, 0, 100)
    assert await store.token_spend("alice", today) == TokenSpend(252, 252, 0, 100, 0, 100)
    assert await store.usage_totals("bob") == UsageTotals(0, 0, 0)


async def test_a_summary_of_messages_the_conversation_no_longer_holds_is_not_kept(
    store: ConversationStore,
) -> None:
    today = utc_now().date()
    conversation, ids = await conversation_with_turns(store, 2)
    other, other_ids = await conversation_with_turns(store, 1)
    # A message of another conversation, or one that never existed.
    assert not await store.save_summary("alice", conversation, summary("s", other_ids[1]))
    assert not await store.save_summary("alice", conversation, summary("s", ids[-1] + 1000))
    # A summary request that ran while the conversation was cleared: its messages are gone.
    assert await store.clear_conversation("alice", conversation) == 4
    spent = await store.token_spend("alice", today)
    kept = await store.save_summary(
        "alice", conversation, summary("stale", ids[3], output_tokens=7)
    )
    assert not kept
    assert await store.get_summary("alice", conversation) is None
    assert (await store.token_spend("alice", today)).day_tokens == spent.day_tokens + 7
    assert await store.get_summary("alice", other) is None


async def test_clearing_drops_the_summary_and_deleting_removes_it(
    store: ConversationStore, backend: Backend
) -> None:
    conversation, ids = await conversation_with_turns(store, 2)
    assert await store.save_summary("alice", conversation, summary("s", ids[1]))
    await store.clear_conversation("alice", conversation)
    assert await store.get_summary("alice", conversation) is None
    stored = await store.append_messages("alice", conversation, [QUESTION, ANSWER])
    assert await store.save_summary("alice", conversation, summary("after", stored[0].id))
    assert await backend.count("conversation_summaries") == 1
    await store.delete_conversation("alice", conversation)
    assert await backend.count("conversation_summaries") == 0
    with pytest.raises(NotFound):
        await store.get_summary("alice", conversation)


async def test_summaries_are_their_owners_only(store: ConversationStore) -> None:
    conversation, ids = await conversation_with_turns(store, 1)
    with pytest.raises(NotFound):
        await store.get_summary("bob", conversation)
    with pytest.raises(NotFound):
        await store.get_summary("alice", "no-such-conversation")
    # Bob's request is charged to Bob, and keeps nothing in Alice's conversation.
    assert not await store.save_summary("bob", conversation, summary("s", ids[1], input_tokens=5))
    assert await store.get_summary("alice", conversation) is None
    assert (await store.usage_totals("bob")).input_tokens == 5


@pytest.mark.parametrize(
    "bad",
    [
        summary("nul \x00 inside", 1),
        summary("s", 1, input_tokens=-1),
        summary("s", -1),
        NewSummary("s", 1, model="\ud800"),
    ],
)
async def test_a_summary_the_store_cannot_hold_writes_nothing(
    store: ConversationStore, bad: NewSummary
) -> None:
    today = utc_now().date()
    conversation, _ = await conversation_with_turns(store, 1)
    spent = await store.token_spend("alice", today)
    with pytest.raises(InvalidRequest):
        await store.save_summary("alice", conversation, bad)
    assert await store.token_spend("alice", today) == spent


async def test_a_summary_is_shared_by_every_store_on_the_database(backend: Backend) -> None:
    first, second = backend.make(), backend.make()
    await first.open()
    await second.open()
    conversation, ids = await conversation_with_turns(first, 1)
    assert await first.save_summary("alice", conversation, summary("shared", ids[1]))
    found = await second.get_summary("alice", conversation)
    assert found is not None and found.text == "shared"


def test_sqlite_migration_adds_the_summaries_table_to_an_existing_database(
    tmp_path: Path,
) -> None:
    from service.store.migrations import SQLITE_MIGRATIONS, SUMMARIES_VERSION, apply_sqlite

    conn = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    try:
        apply_sqlite(conn, SQLITE_MIGRATIONS[: SUMMARIES_VERSION - 1])
        assert apply_sqlite(conn, SQLITE_MIGRATIONS) == SUMMARIES_VERSION
        (count,) = conn.execute("SELECT COUNT(*) FROM conversation_summaries").fetchone()
    finally:
        conn.close()
    assert count == 0
