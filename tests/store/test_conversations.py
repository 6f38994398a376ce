"""Contract: creating, finding, listing and deleting conversations."""

from __future__ import annotations

from datetime import UTC

import pytest

from service.content import TextBlock
from service.errors import InvalidRequest, NotFound
from service.store import ConversationStore, NewMessage
from service.store.rows import encode_page_token
from tests.store.conftest import Backend


def user_text(text: str) -> NewMessage:
    return NewMessage(role="user", content=[TextBlock(text)])


async def test_create_then_get(store: ConversationStore) -> None:
    created = await store.create_conversation("alice", "Trip plans")
    assert created.user_id == "alice"
    assert created.title == "Trip plans"
    assert created.message_count == 0
    assert created.created_at.tzinfo is not None
    assert created.created_at.utcoffset() == UTC.utcoffset(None)
    assert await store.get_conversation("alice", created.id) == created


async def test_ids_are_distinct_and_unguessable(store: ConversationStore) -> None:
    ids = {(await store.create_conversation("alice")).id for _ in range(20)}
    assert len(ids) == 20
    assert all(len(i) >= 32 for i in ids)


async def test_missing_conversation_is_not_found(store: ConversationStore) -> None:
    with pytest.raises(NotFound):
        await store.get_conversation("alice", "c_nope")
    with pytest.raises(NotFound):
        await store.get_conversation("alice", "bad\x00id")


async def test_list_is_newest_activity_first(store: ConversationStore) -> None:
    first = await store.create_conversation("alice", "first")
    second = await store.create_conversation("alice", "second")
    third = await store.create_conversation("alice", "third")
    page, token = await store.list_conversations("alice", 10)
    assert [c.id for c in page] == [third.id, second.id, first.id]
    assert token == ""

    await store.append_messages("alice", first.id, [user_text("hello")])
    page, _ = await store.list_conversations("alice", 10)
    assert [c.id for c in page] == [first.id, third.id, second.id]
    assert page[0].message_count == 1


async def test_list_shows_only_the_callers_conversations(store: ConversationStore) -> None:
    mine = await store.create_conversation("alice")
    await store.create_conversation("bob")
    page, token = await store.list_conversations("alice", 10)
    assert [c.id for c in page] == [mine.id]
    assert token == ""
    assert await store.list_conversations("carol", 10) == ([], "")


async def test_paging_through_25_with_a_creation_between_pages(
    store: ConversationStore,
) -> None:
    created = [(await store.create_conversation("alice", f"c{i}")).id for i in range(25)]
    seen: list[str] = []
    page, token = await store.list_conversations("alice", 10)
    seen += [c.id for c in page]
    sizes = [len(page)]
    newcomer = await store.create_conversation("alice", "arrived while paging")
    while token:
        page, token = await store.list_conversations("alice", 10, token)
        seen += [c.id for c in page]
        sizes.append(len(page))
    assert sizes == [10, 10, 5]
    assert seen == list(reversed(created))
    assert newcomer.id not in seen
    # The next walk from the top starts with the newcomer.
    page, _ = await store.list_conversations("alice", 10)
    assert page[0].id == newcomer.id


async def test_exact_multiple_of_page_size_ends_with_empty_token(
    store: ConversationStore,
) -> None:
    for _ in range(4):
        await store.create_conversation("alice")
    page, token = await store.list_conversations("alice", 2)
    assert len(page) == 2 and token
    page, token = await store.list_conversations("alice", 2, token)
    assert len(page) == 2
    assert token == ""


@pytest.mark.parametrize(
    "token",
    ["garbage!", "bm90IGpzb24", "eyJ2IjoxfQ", "eyJ2IjoyLCJiZWZvcmUiOjV9", "W10"],
)
async def test_malformed_page_token_is_invalid_request(
    store: ConversationStore, token: str
) -> None:
    await store.create_conversation("alice")
    with pytest.raises(InvalidRequest):
        await store.list_conversations("alice", 10, token)


async def test_page_token_past_the_end_gives_empty_page(store: ConversationStore) -> None:
    await store.create_conversation("alice")
    assert await store.list_conversations("alice", 10, encode_page_token(1)) == ([], "")


async def test_page_size_must_be_positive(store: ConversationStore) -> None:
    with pytest.raises(InvalidRequest):
        await store.list_conversations("alice", 0)


async def test_current_conversation(store: ConversationStore) -> None:
    assert await store.current_conversation("alice") is None
    first = await store.create_conversation("alice")
    assert await store.current_conversation("alice") == first
    # Several creations within one clock tick still have a definite latest.
    burst = [await store.create_conversation("alice") for _ in range(5)]
    current = await store.current_conversation("alice")
    assert current is not None and current.id == burst[-1].id

    await store.append_messages("alice", first.id, [user_text("back to the first")])
    current = await store.current_conversation("alice")
    assert current is not None and current.id == first.id

    # Another user's activity does not move alice's current conversation.
    other = await store.create_conversation("bob")
    current = await store.current_conversation("alice")
    assert current is not None and current.id == first.id
    bob_current = await store.current_conversation("bob")
    assert bob_current is not None and bob_current.id == other.id


async def test_delete_removes_conversation_and_messages(
    store: ConversationStore, backend: Backend
) -> None:
    doomed = await store.create_conversation("alice")
    kept = await store.create_conversation("alice")
    await store.append_messages("alice", doomed.id, [user_text("a"), user_text("b")])
    await store.append_messages("alice", kept.id, [user_text("c")])

    await store.delete_conversation("alice", doomed.id)

    with pytest.raises(NotFound):
        await store.get_conversation("alice", doomed.id)
    with pytest.raises(NotFound):
        await store.messages("alice", doomed.id)
    with pytest.raises(NotFound):
        await store.delete_conversation("alice", doomed.id)
    page, _ = await store.list_conversations("alice", 10)
    assert [c.id for c in page] == [kept.id]
    assert len(await store.messages("alice", kept.id)) == 1
    assert await backend.count("messages") == 1


async def test_count_users(store: ConversationStore) -> None:
    assert await store.count_users() == 0
    await store.create_conversation("alice")
    await store.create_conversation("alice")
    only_bob = await store.create_conversation("bob")
    assert await store.count_users() == 2
    await store.delete_conversation("bob", only_bob.id)
    assert await store.count_users() == 1


async def test_empty_user_id_is_refused(store: ConversationStore) -> None:
    with pytest.raises(InvalidRequest):
        await store.create_conversation("")
