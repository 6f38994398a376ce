"""Contract: a conversation's messages in pages, oldest first."""

from __future__ import annotations

import pytest

from service.content import TextBlock
from service.errors import InvalidRequest, NotFound
from service.store import ConversationStore, NewMessage
from service.store.rows import encode_page_token


def user_text(text: str) -> NewMessage:
    return NewMessage(role="user", content=[TextBlock(text)])


async def walk(store: ConversationStore, conversation_id: str, size: int) -> list[list[int]]:
    """Every page's message ids, following the tokens to the end."""
    pages: list[list[int]] = []
    token = ""
    while True:
        page, token = await store.messages_page("alice", conversation_id, size, token)
        pages.append([m.id for m in page])
        if not token:
            return pages


async def test_pages_go_forward_in_time_and_cover_everything_once(
    store: ConversationStore,
) -> None:
    conversation = await store.create_conversation("alice")
    stored = await store.append_messages(
        "alice", conversation.id, [user_text(f"m{i}") for i in range(25)]
    )
    pages = await walk(store, conversation.id, 10)
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [i for p in pages for i in p] == [m.id for m in stored]
    first, _ = await store.messages_page("alice", conversation.id, 10)
    assert first == stored[:10]


async def test_an_exact_multiple_ends_without_an_empty_page(store: ConversationStore) -> None:
    conversation = await store.create_conversation("alice")
    await store.append_messages("alice", conversation.id, [user_text(f"m{i}") for i in range(20)])
    assert [len(p) for p in await walk(store, conversation.id, 10)] == [10, 10]


async def test_empty_conversation_is_one_empty_page(store: ConversationStore) -> None:
    conversation = await store.create_conversation("alice")
    assert await store.messages_page("alice", conversation.id, 10) == ([], "")


async def test_messages_appended_while_paging_come_later_and_once(
    store: ConversationStore,
) -> None:
    conversation = await store.create_conversation("alice")
    stored = await store.append_messages(
        "alice", conversation.id, [user_text(f"m{i}") for i in range(15)]
    )
    page, token = await store.messages_page("alice", conversation.id, 10)
    seen = [m.id for m in page]
    stored += await store.append_messages("alice", conversation.id, [user_text("late")])
    while token:
        page, token = await store.messages_page("alice", conversation.id, 10, token)
        seen += [m.id for m in page]
    assert seen == [m.id for m in stored]


async def test_foreign_and_missing_are_not_found(store: ConversationStore) -> None:
    conversation = await store.create_conversation("alice")
    await store.append_messages("alice", conversation.id, [user_text(f"m{i}") for i in range(3)])
    _, token = await store.messages_page("alice", conversation.id, 1)
    with pytest.raises(NotFound):
        await store.messages_page("bob", conversation.id, 10)
    with pytest.raises(NotFound):
        await store.messages_page("bob", conversation.id, 10, token)
    with pytest.raises(NotFound):
        await store.messages_page("alice", "c_missing", 10)


@pytest.mark.parametrize(
    "token",
    ["not base64 !", "e30", encode_page_token(5), "eyJ2IjoxLCJjIjoiYyIsImFmdGVyIjotMX0"],
    ids=["garbage", "empty-object", "conversation-list-token", "negative-id"],
)
async def test_a_bad_token_is_invalid(store: ConversationStore, token: str) -> None:
    conversation = await store.create_conversation("alice")
    with pytest.raises(InvalidRequest, match="page_token"):
        await store.messages_page("alice", conversation.id, 10, token)


async def test_another_conversations_token_is_refused(store: ConversationStore) -> None:
    one = await store.create_conversation("alice")
    other = await store.create_conversation("alice")
    await store.append_messages("alice", one.id, [user_text(f"m{i}") for i in range(3)])
    _, token = await store.messages_page("alice", one.id, 1)
    with pytest.raises(InvalidRequest, match="another conversation"):
        await store.messages_page("alice", other.id, 10, token)


async def test_page_size_must_be_positive(store: ConversationStore) -> None:
    conversation = await store.create_conversation("alice")
    with pytest.raises(InvalidRequest, match="page_size"):
        await store.messages_page("alice", conversation.id, 0)
