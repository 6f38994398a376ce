"""Contract: the newest messages that fit a token budget (a turn's history read)."""

from __future__ import annotations

import pytest

from service.content import Message, TextBlock, ToolResultBlock, ToolUseBlock
from service.errors import NotFound
from service.history import estimate_tokens
from service.store import ConversationStore, NewMessage, StoredMessage
from service.store.migrations import POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS
from tests.store.conftest import Backend


def user_text(text: str) -> NewMessage:
    return NewMessage(role="user", content=[TextBlock(text)])


def reply(text: str) -> NewMessage:
    return NewMessage(role="assistant", content=[TextBlock(text)])


def tool_round(n: int) -> list[NewMessage]:
    """A question answered after one tool call: user, tool_use, tool_result, answer."""
    return [
        user_text(f"question {n} " + "x" * (n % 7) * 9),
        NewMessage(
            role="assistant",
            content=[ToolUseBlock(id=f"t{n}", name="calculator", input={"expression": f"{n}*2"})],
        ),
        NewMessage(role="user", content=[ToolResultBlock(tool_use_id=f"t{n}", content=str(n * 2))]),
        reply(f"answer {n} " + "y" * (n % 5) * 13),
    ]


def plain_user(m: StoredMessage) -> bool:
    return m.role == "user" and not any(isinstance(b, ToolResultBlock) for b in m.content)


def expected_window(everything: list[StoredMessage], budget: int) -> list[StoredMessage]:
    """The contract, computed over the whole conversation.

    The longest suffix whose estimates fit (at least the newest message),
    started earlier if needed at the nearest plain user message at or before it.
    """
    if not everything:
        return []
    start, total = len(everything) - 1, everything[-1].estimated_tokens
    while start > 0 and total + everything[start - 1].estimated_tokens <= budget:
        start -= 1
        total += everything[start].estimated_tokens
    while start > 0 and not plain_user(everything[start]):
        start -= 1
    return everything[start:]


async def test_estimate_is_stored_with_each_message(store: ConversationStore) -> None:
    conversation = await store.create_conversation("alice")
    stored = await store.append_messages("alice", conversation.id, tool_round(3))
    expected = [estimate_tokens(Message(m.role, m.content)) for m in stored]
    assert [m.estimated_tokens for m in stored] == expected
    assert all(e > 0 for e in expected)
    assert await store.messages("alice", conversation.id) == stored


async def test_empty_missing_and_foreign(store: ConversationStore) -> None:
    conversation = await store.create_conversation("alice")
    assert await store.recent_messages("alice", conversation.id, 1000) == []
    await store.append_messages("alice", conversation.id, [user_text("mine")])
    with pytest.raises(NotFound):
        await store.recent_messages("bob", conversation.id, 1000)
    with pytest.raises(NotFound):
        await store.recent_messages("alice", "c_missing", 1000)


async def test_a_budget_that_fits_everything_returns_everything(
    store: ConversationStore,
) -> None:
    conversation = await store.create_conversation("alice")
    for n in range(3):
        await store.append_messages("alice", conversation.id, tool_round(n))
    everything = await store.messages("alice", conversation.id)
    assert await store.recent_messages("alice", conversation.id, 10**9) == everything


async def test_every_budget_matches_the_contract(store: ConversationStore) -> None:
    conversation = await store.create_conversation("alice")
    for n in range(6):
        await store.append_messages("alice", conversation.id, tool_round(n))
        await store.append_messages("alice", conversation.id, [user_text(f"plain {n}")])
        await store.append_messages("alice", conversation.id, [reply(f"ok {n}")])
    everything = await store.messages("alice", conversation.id)
    total = sum(m.estimated_tokens for m in everything)
    for budget in range(0, total + 20, 3):
        window = await store.recent_messages("alice", conversation.id, budget)
        assert window == expected_window(everything, budget), budget
        assert plain_user(window[0])
        # Every tool result in the window comes with the call it answers.
        blocks = [b for m in window for b in m.content]
        calls = {b.id for b in blocks if isinstance(b, ToolUseBlock)}
        results = {b.tool_use_id for b in blocks if isinstance(b, ToolResultBlock)}
        assert results <= calls


async def test_a_cut_inside_a_tool_round_goes_back_to_its_question(
    store: ConversationStore,
) -> None:
    conversation = await store.create_conversation("alice")
    await store.append_messages("alice", conversation.id, tool_round(1))
    second = await store.append_messages("alice", conversation.id, tool_round(2))
    # Room for the answer and the tool result only: the window still starts
    # at the question, so the result keeps its call.
    budget = second[3].estimated_tokens + second[2].estimated_tokens
    window = await store.recent_messages("alice", conversation.id, budget)
    assert window == second


async def test_the_newest_turn_survives_a_budget_smaller_than_it(
    store: ConversationStore,
) -> None:
    conversation = await store.create_conversation("alice")
    await store.append_messages("alice", conversation.id, tool_round(1))
    last = await store.append_messages("alice", conversation.id, tool_round(2))
    assert await store.recent_messages("alice", conversation.id, 0) == last


async def test_without_a_plain_user_message_everything_is_returned(
    store: ConversationStore,
) -> None:
    conversation = await store.create_conversation("alice")
    stored = await store.append_messages(
        "alice", conversation.id, [reply("one"), reply("two"), reply("three")]
    )
    assert await store.recent_messages("alice", conversation.id, 0) == stored


async def test_rows_from_before_the_estimate_column_are_estimated_on_read(
    store: ConversationStore, backend: Backend
) -> None:
    conversation = await store.create_conversation("alice")
    stored = await store.append_messages("alice", conversation.id, tool_round(4))
    await backend.execute("UPDATE messages SET estimated_tokens = NULL")
    assert await store.messages("alice", conversation.id) == stored
    assert await store.recent_messages("alice", conversation.id, 10**6) == stored


async def test_a_version_2_database_upgrades_and_keeps_its_messages(backend: Backend) -> None:
    migrations = SQLITE_MIGRATIONS if backend.name == "sqlite" else POSTGRES_MIGRATIONS
    async with backend.make(migrations[:2]) as old:
        conversation = await old.create_conversation("alice")
    stamp = "2024-01-01T00:00:00+00:00"
    await backend.execute(
        "INSERT INTO messages (conversation_id, role, content, status, created_at) VALUES"
        f' (\'{conversation.id}\', \'user\', \'[{{"type":"text","text":"from v2"}}]\','
        f" 'complete', '{stamp}')"
    )
    async with backend.make() as upgraded:
        assert await upgraded.schema_version() == len(migrations)  # type: ignore[attr-defined]
        (message,) = await upgraded.recent_messages("alice", conversation.id, 100)
        assert message.content == (TextBlock("from v2"),)
        assert message.estimated_tokens == estimate_tokens(Message("user", message.content))
        (again,) = await upgraded.append_messages("alice", conversation.id, [reply("hi")])
        assert await upgraded.recent_messages("alice", conversation.id, 100) == [message, again]


async def test_a_window_longer_than_one_read_batch(store: ConversationStore) -> None:
    conversation = await store.create_conversation("alice")
    batch: list[NewMessage] = []
    for n in range(200):
        batch += [user_text(f"q{n} " + "z" * (n % 11) * 5), reply(f"a{n} " + "w" * (n % 3) * 40)]
    await store.append_messages("alice", conversation.id, batch)
    everything = await store.messages("alice", conversation.id)
    total = sum(m.estimated_tokens for m in everything)
    for budget in (total // 7, total // 2, total - 50, total):
        window = await store.recent_messages("alice", conversation.id, budget)
        assert window == expected_window(everything, budget), budget
        assert len(window) > 50
