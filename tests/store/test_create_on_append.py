"""Contract: ``append_messages(..., create=True)``, a turn's write that creates its conversation."""

from __future__ import annotations

import pytest

from service.content import TextBlock
from service.errors import NotFound
from service.store import ConversationStore, NewMessage
from service.store.rows import new_conversation_id
from tests.store.conftest import Backend


def exchange(question: str) -> list[NewMessage]:
    return [
        NewMessage(role="user", content=[TextBlock(question)]),
        NewMessage(
            role="assistant", content=[TextBlock("an answer")], input_tokens=5, output_tokens=2
        ),
    ]


async def test_a_new_conversation_comes_with_its_messages_and_comes_first(
    store: ConversationStore,
) -> None:
    older = await store.create_conversation("alice", "older")
    fresh = new_conversation_id()
    stored = await store.append_messages("alice", fresh, exchange("Hello there"), create=True)
    assert [m.conversation_id for m in stored] == [fresh, fresh]
    conversation = await store.get_conversation("alice", fresh)
    assert conversation.title == "Hello there"
    assert conversation.message_count == 2
    page, _ = await store.list_conversations("alice", 10)
    assert [c.id for c in page] == [fresh, older.id]
    assert (await store.usage_totals("alice")).turns == 1


async def test_creating_an_existing_conversation_of_the_user_appends_to_it(
    store: ConversationStore,
) -> None:
    fresh = new_conversation_id()
    await store.append_messages("alice", fresh, exchange("first"), create=True)
    other = await store.create_conversation("alice", "other")
    await store.append_messages("alice", fresh, exchange("second"), create=True)
    conversation = await store.get_conversation("alice", fresh)
    assert conversation.title == "first" and conversation.message_count == 4
    texts = [m.content[0] for m in await store.messages("alice", fresh)]
    assert texts == [TextBlock(t) for t in ("first", "an answer", "second", "an answer")]
    page, _ = await store.list_conversations("alice", 10)
    assert [c.id for c in page] == [fresh, other.id]  # the latest activity first


async def test_another_users_conversation_is_not_found_and_nothing_is_written(
    store: ConversationStore, backend: Backend
) -> None:
    fresh = new_conversation_id()
    await store.append_messages("alice", fresh, exchange("mine"), create=True)
    with pytest.raises(NotFound):
        await store.append_messages("mallory", fresh, exchange("theirs"), create=True)
    assert await backend.count("messages") == 2
    assert (await store.get_conversation("alice", fresh)).message_count == 2
    assert (await store.usage_totals("mallory")).turns == 0
    page, _ = await store.list_conversations("mallory", 10)
    assert page == []
