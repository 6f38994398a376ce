"""Contract: appending, reading and clearing messages."""

from __future__ import annotations

import pytest

from service.content import TextBlock, ToolResultBlock, ToolUseBlock
from service.errors import InvalidRequest, NotFound
from service.store import ConversationStore, NewMessage
from tests.store.conftest import Backend


def user_text(text: str) -> NewMessage:
    return NewMessage(role="user", content=[TextBlock(text)])


def a_turn() -> list[NewMessage]:
    """A tool-using turn with every block type, odd characters and usage."""
    return [
        user_text("What is 6 \u00d7 7? Answer in 日本語 \U0001f600"),
        NewMessage(
            role="assistant",
            content=[
                TextBlock("Let me calculate."),
                ToolUseBlock(
                    id="toolu_1",
                    name="calculator",
                    input={"expression": "6*7", "nested": {"list": [1, 2.5, None, True]}},
                ),
            ],
            provider="anthropic",
            model="claude-x",
            input_tokens=120,
            output_tokens=30,
            request_id="req_1",
        ),
        NewMessage(
            role="user",
            content=[
                ToolResultBlock(tool_use_id="toolu_1", content="42", name="calculator"),
                ToolResultBlock(tool_use_id="toolu_2", content="boom\x00\ud800", is_error=True),
            ],
            request_id="req_1",
        ),
        NewMessage(
            role="assistant",
            content=[TextBlock("It is 42.")],
            status="cancelled",
            provider="anthropic",
            model="claude-x",
            input_tokens=200,
            output_tokens=5,
            request_id="req_1",
        ),
    ]


async def test_append_round_trips_blocks_status_and_usage(store: ConversationStore) -> None:
    conversation = await store.create_conversation("alice")
    turn = a_turn()
    stored = await store.append_messages("alice", conversation.id, turn)

    assert [m.content for m in stored] == [tuple(m.content) for m in turn]
    assert [m.role for m in stored] == ["user", "assistant", "user", "assistant"]
    assert [m.status for m in stored] == ["complete", "complete", "complete", "cancelled"]
    assert stored[1].provider == "anthropic" and stored[1].model == "claude-x"
    assert (stored[1].input_tokens, stored[1].output_tokens) == (120, 30)
    assert all(m.request_id == "req_1" for m in stored[1:])
    assert all(m.conversation_id == conversation.id for m in stored)
    assert [m.id for m in stored] == sorted({m.id for m in stored})
    assert all(m.created_at.utcoffset() is not None for m in stored)

    # Read back: identical values, dataclasses rebuilt.
    read = await store.messages("alice", conversation.id)
    assert read == stored
    assert isinstance(read[1].content[1], ToolUseBlock)
    assert read[2].content[1] == ToolResultBlock("toolu_2", "boom\x00\ud800", is_error=True)


async def test_append_updates_the_conversation(store: ConversationStore) -> None:
    conversation = await store.create_conversation("alice")
    await store.append_messages("alice", conversation.id, a_turn())
    updated = await store.get_conversation("alice", conversation.id)
    assert updated.message_count == 4
    assert updated.updated_at >= conversation.updated_at
    assert updated.created_at == conversation.created_at
    assert updated.title == "What is 6 \u00d7 7? Answer in 日本語 \U0001f600"


async def test_messages_accumulate_oldest_first(store: ConversationStore) -> None:
    conversation = await store.create_conversation("alice")
    assert await store.messages("alice", conversation.id) == []
    for i in range(3):
        await store.append_messages("alice", conversation.id, [user_text(f"m{i}")])
    texts = [m.content[0] for m in await store.messages("alice", conversation.id)]
    assert texts == [TextBlock("m0"), TextBlock("m1"), TextBlock("m2")]


async def test_title_comes_from_first_user_text_once(store: ConversationStore) -> None:
    conversation = await store.create_conversation("alice")
    only_assistant = NewMessage(role="assistant", content=[TextBlock("Hi, I am the agent")])
    await store.append_messages("alice", conversation.id, [only_assistant])
    assert (await store.get_conversation("alice", conversation.id)).title == ""

    long_text = "Please   help me\nplan " + "a very long trip across many countries " * 5
    await store.append_messages("alice", conversation.id, [user_text(long_text)])
    title = (await store.get_conversation("alice", conversation.id)).title
    assert title.startswith("Please help me plan a very long trip")
    assert title.endswith("…")
    assert len(title) <= 60

    await store.append_messages("alice", conversation.id, [user_text("something else")])
    assert (await store.get_conversation("alice", conversation.id)).title == title


async def test_explicit_title_is_kept(store: ConversationStore) -> None:
    conversation = await store.create_conversation("alice", "Named")
    await store.append_messages("alice", conversation.id, [user_text("hello")])
    assert (await store.get_conversation("alice", conversation.id)).title == "Named"


async def test_clear_keeps_conversation_and_usage(store: ConversationStore) -> None:
    conversation = await store.create_conversation("alice")
    await store.append_messages("alice", conversation.id, a_turn())
    usage = await store.usage_totals("alice")

    assert await store.clear_conversation("alice", conversation.id) == 4
    assert await store.messages("alice", conversation.id) == []
    cleared = await store.get_conversation("alice", conversation.id)
    assert cleared.message_count == 0
    assert await store.usage_totals("alice") == usage
    assert await store.clear_conversation("alice", conversation.id) == 0

    stored = await store.append_messages("alice", conversation.id, [user_text("again")])
    assert await store.messages("alice", conversation.id) == stored
    assert (await store.get_conversation("alice", conversation.id)).message_count == 1


async def test_append_to_missing_conversation_writes_nothing(
    store: ConversationStore, backend: Backend
) -> None:
    with pytest.raises(NotFound):
        await store.append_messages("alice", "c_missing", a_turn())
    assert await backend.count("messages") == 0
    assert await store.usage_totals("alice") == (await store.usage_totals("nobody"))
    assert (await store.usage_totals("alice")).turns == 0


@pytest.mark.parametrize(
    "batch",
    [
        [],
        [NewMessage(role="system", content=[TextBlock("x")])],  # type: ignore[arg-type]
        [user_text("ok"), NewMessage(role="user", content=[], status="weird")],  # type: ignore[arg-type]
        [user_text("ok"), NewMessage(role="assistant", content=[], output_tokens=-1)],
        [user_text("ok"), NewMessage(role="assistant", content=[], model="a\x00b")],
        [
            user_text("ok"),
            NewMessage(
                role="assistant",
                content=[ToolUseBlock(id="t", name="n", input={"x": object()})],
            ),
        ],
        [user_text("ok"), NewMessage(role="user", content=["not a block"])],  # type: ignore[list-item]
    ],
    ids=["empty", "role", "status", "tokens", "nul", "not-json", "not-a-block"],
)
async def test_bad_batch_is_refused_and_writes_nothing(
    store: ConversationStore, backend: Backend, batch: list[NewMessage]
) -> None:
    conversation = await store.create_conversation("alice")
    await store.append_messages("alice", conversation.id, [user_text("before")])
    before = await store.get_conversation("alice", conversation.id)

    with pytest.raises(InvalidRequest):
        await store.append_messages("alice", conversation.id, batch)

    assert await backend.count("messages") == 1
    assert await store.get_conversation("alice", conversation.id) == before
    assert await store.usage_totals("alice") == (await store.usage_totals("nobody"))


async def test_user_text_with_unstorable_characters_still_makes_a_title(
    store: ConversationStore,
) -> None:
    conversation = await store.create_conversation("alice")
    await store.append_messages("alice", conversation.id, [user_text("a\x00b\ud800c")])
    assert (await store.get_conversation("alice", conversation.id)).title == "a bc"
