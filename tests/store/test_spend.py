"""Contract: token spend per user and UTC day, shared by every store on one database."""

from __future__ import annotations

from datetime import timedelta

from service.content import TextBlock
from service.store import ConversationStore, NewMessage
from service.store.base import TokenSpend
from service.store.rows import utc_now
from tests.store.conftest import Backend

QUESTION = NewMessage(role="user", content=[TextBlock("q")])


def reply(input_tokens: int, output_tokens: int) -> NewMessage:
    return NewMessage(
        role="assistant",
        content=[TextBlock("ok")],
        input_tokens=input_tokens,
        output_tokens=output_tokens,
    )


async def test_spend_counts_input_and_output_of_today(store: ConversationStore) -> None:
    today = utc_now().date()
    assert await store.token_spend("alice", today) == TokenSpend(0, 0)
    one = await store.create_conversation("alice")
    await store.append_messages("alice", one.id, [QUESTION, reply(10, 3)])
    await store.append_messages("alice", one.id, [QUESTION, reply(5, 1), reply(2, 2)])
    await store.append_messages("alice", one.id, [QUESTION])  # no usage: nothing added
    assert await store.token_spend("alice", today) == TokenSpend(23, 23)
    assert await store.token_spend("bob", today) == TokenSpend(0, 0)
    # Another day of the same month sees this day in its month, not in its day.
    if today.day > 1:
        yesterday = today - timedelta(days=1)
        assert await store.token_spend("alice", yesterday) == TokenSpend(0, 0)
    if (today + timedelta(days=1)).month == today.month:
        assert await store.token_spend("alice", today + timedelta(days=1)) == TokenSpend(0, 23)
    # Next month starts from nothing.
    next_month = (today.replace(day=28) + timedelta(days=4)).replace(day=1)
    assert await store.token_spend("alice", next_month) == TokenSpend(0, 0)


async def test_clearing_or_deleting_keeps_spend(store: ConversationStore) -> None:
    today = utc_now().date()
    conversation = await store.create_conversation("alice")
    await store.append_messages("alice", conversation.id, [QUESTION, reply(4, 4)])
    await store.clear_conversation("alice", conversation.id)
    await store.delete_conversation("alice", conversation.id)
    assert await store.token_spend("alice", today) == TokenSpend(8, 8)


async def test_spend_survives_reopening_and_is_shared(backend: Backend) -> None:
    """Two stores on one database (two service processes) see the same spend, across restarts."""
    today = utc_now().date()
    first, second = backend.make(), backend.make()
    await first.open()
    await second.open()
    one = await first.create_conversation("alice")
    await first.append_messages("alice", one.id, [QUESTION, reply(10, 5)])
    assert await second.token_spend("alice", today) == TokenSpend(15, 15)
    two = await second.create_conversation("alice")
    await second.append_messages("alice", two.id, [QUESTION, reply(1, 1)])
    assert await first.token_spend("alice", today) == TokenSpend(17, 17)
    await first.close()
    await second.close()

    async with backend.make() as restarted:
        assert await restarted.token_spend("alice", today) == TokenSpend(17, 17)
