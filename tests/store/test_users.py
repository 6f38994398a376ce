"""Contract: usage totals and user profiles."""

from __future__ import annotations

import pytest

from service.content import TextBlock
from service.errors import InvalidRequest
from service.store import ConversationStore, NewMessage, UsageTotals, UserProfileRecord


def reply(input_tokens: int, output_tokens: int, status: str = "complete") -> NewMessage:
    return NewMessage(
        role="assistant",
        content=[TextBlock("ok")],
        status=status,  # type: ignore[arg-type]
        input_tokens=input_tokens,
        output_tokens=output_tokens,
    )


QUESTION = NewMessage(role="user", content=[TextBlock("q")])


async def test_usage_starts_at_zero(store: ConversationStore) -> None:
    assert await store.usage_totals("alice") == UsageTotals(0, 0, 0)


async def test_usage_accumulates_across_turns_and_conversations(
    store: ConversationStore,
) -> None:
    one = await store.create_conversation("alice")
    two = await store.create_conversation("alice")
    await store.append_messages("alice", one.id, [QUESTION, reply(10, 3)])
    await store.append_messages("alice", one.id, [QUESTION, reply(20, 4, "failed")])
    await store.append_messages("alice", two.id, [QUESTION, reply(5, 1), reply(7, 2)])
    await store.append_messages("alice", two.id, [QUESTION])
    assert await store.usage_totals("alice") == UsageTotals(42, 10, 4)

    bobs = await store.create_conversation("bob")
    await store.append_messages("bob", bobs.id, [QUESTION, reply(1, 1)])
    assert await store.usage_totals("bob") == UsageTotals(1, 1, 1)
    assert await store.usage_totals("alice") == UsageTotals(42, 10, 4)


async def test_deleting_a_conversation_keeps_usage(store: ConversationStore) -> None:
    conversation = await store.create_conversation("alice")
    await store.append_messages("alice", conversation.id, [QUESTION, reply(10, 3)])
    await store.delete_conversation("alice", conversation.id)
    assert await store.usage_totals("alice") == UsageTotals(10, 3, 1)


async def test_profile_upsert(store: ConversationStore) -> None:
    assert await store.get_profile("alice") is None
    first = UserProfileRecord("alice", "Alice", "Answer briefly.")
    await store.put_profile(first)
    assert await store.get_profile("alice") == first

    second = UserProfileRecord("alice", "Alice B.", "")
    await store.put_profile(second)
    assert await store.get_profile("alice") == second

    await store.put_profile(UserProfileRecord("bob", "Bob", "Use metric units."))
    assert await store.get_profile("alice") == second
    assert await store.get_profile("bob") == UserProfileRecord("bob", "Bob", "Use metric units.")


async def test_profile_with_unstorable_text_is_refused(store: ConversationStore) -> None:
    with pytest.raises(InvalidRequest):
        await store.put_profile(UserProfileRecord("alice", "A\x00", ""))
    assert await store.get_profile("alice") is None
