"""Contract: another user's conversation is indistinguishable from a missing one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from service.content import TextBlock
from service.errors import NotFound
from service.store import ConversationStore, NewMessage

Probe = Callable[[ConversationStore, str], Awaitable[object]]

PROBES: dict[str, Probe] = {
    "get": lambda s, cid: s.get_conversation("bob", cid),
    "messages": lambda s, cid: s.messages("bob", cid),
    "append": lambda s, cid: s.append_messages(
        "bob",
        cid,
        [
            NewMessage(role="user", content=[TextBlock("mine now")]),
            NewMessage(role="assistant", content=[TextBlock("ok")], input_tokens=9),
        ],
    ),
    "delete": lambda s, cid: s.delete_conversation("bob", cid),
    "clear": lambda s, cid: s.clear_conversation("bob", cid),
}


@pytest.mark.parametrize("probe", PROBES.values(), ids=PROBES.keys())
async def test_other_users_conversation_is_not_found(
    store: ConversationStore, probe: Probe
) -> None:
    alices = await store.create_conversation("alice")
    await store.append_messages(
        "alice",
        alices.id,
        [
            NewMessage(role="user", content=[TextBlock("secret")]),
            NewMessage(role="assistant", content=[TextBlock("noted")], output_tokens=4),
        ],
    )
    conversation_before = await store.get_conversation("alice", alices.id)
    messages_before = await store.messages("alice", alices.id)
    usage_before = await store.usage_totals("alice")

    with pytest.raises(NotFound) as foreign:
        await probe(store, alices.id)
    with pytest.raises(NotFound) as missing:
        await probe(store, "c_0123456789abcdef0123456789abcdef")

    # The same words either way, apart from echoing the id that was asked for.
    assert foreign.value.message.replace(alices.id, "ID") == missing.value.message.replace(
        "c_0123456789abcdef0123456789abcdef", "ID"
    )
    assert await store.get_conversation("alice", alices.id) == conversation_before
    assert await store.messages("alice", alices.id) == messages_before
    assert await store.usage_totals("alice") == usage_before
    assert (await store.usage_totals("bob")).turns == 0
    assert await store.list_conversations("bob", 10) == ([], "")
    assert await store.current_conversation("bob") is None
