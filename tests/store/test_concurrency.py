"""Contract: concurrent writers never lose or interleave a batch."""

from __future__ import annotations

import asyncio

from service.content import TextBlock
from service.store import ConversationStore, NewMessage, UsageTotals
from tests.store.conftest import Backend


def exchange(tag: str) -> list[NewMessage]:
    return [
        NewMessage(role="user", content=[TextBlock(f"q{tag}")]),
        NewMessage(role="assistant", content=[TextBlock(f"a{tag}")], input_tokens=1),
    ]


def assert_batches_intact(texts: list[str]) -> None:
    """Every question is immediately followed by its own answer."""
    assert len(texts) % 2 == 0
    for question, answer in zip(texts[::2], texts[1::2], strict=True):
        assert question.startswith("q") and answer == "a" + question[1:]


async def texts_of(store: ConversationStore, user_id: str, conversation_id: str) -> list[str]:
    out = []
    for message in await store.messages(user_id, conversation_id):
        block = message.content[0]
        assert isinstance(block, TextBlock)
        out.append(block.text)
    return out


async def test_twenty_concurrent_appends_are_all_stored(store: ConversationStore) -> None:
    conversation = await store.create_conversation("alice")
    await asyncio.gather(
        *(store.append_messages("alice", conversation.id, exchange(str(i))) for i in range(20))
    )
    texts = await texts_of(store, "alice", conversation.id)
    assert sorted(texts[::2]) == sorted(f"q{i}" for i in range(20))
    assert_batches_intact(texts)
    assert (await store.get_conversation("alice", conversation.id)).message_count == 40
    assert await store.usage_totals("alice") == UsageTotals(20, 0, 20)


async def test_two_stores_on_one_database_append_concurrently(backend: Backend) -> None:
    async with backend.make() as first, backend.make() as second:
        conversation = await first.create_conversation("alice")
        await asyncio.gather(
            *(
                (first if i % 2 else second).append_messages(
                    "alice", conversation.id, exchange(str(i))
                )
                for i in range(20)
            )
        )
        texts = await texts_of(second, "alice", conversation.id)
        assert len(texts) == 40
        assert_batches_intact(texts)
        assert (await first.usage_totals("alice")).turns == 20


async def test_cancelled_appends_store_whole_batches_or_nothing(
    store: ConversationStore,
) -> None:
    conversation = await store.create_conversation("alice")
    # Cancel at points spread from "before the first statement" to "after commit".
    for step in range(30):
        task = asyncio.create_task(
            store.append_messages("alice", conversation.id, exchange(str(step)))
        )
        await asyncio.sleep(step * 0.0002)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    texts = await texts_of(store, "alice", conversation.id)
    assert_batches_intact(texts)
    stored_turns = len(texts) // 2
    assert (await store.get_conversation("alice", conversation.id)).message_count == len(texts)
    assert await store.usage_totals("alice") == UsageTotals(stored_turns, 0, stored_turns)
    # The store is still usable afterwards.
    await store.append_messages("alice", conversation.id, exchange("last"))
    assert (await texts_of(store, "alice", conversation.id))[-1] == "alast"
