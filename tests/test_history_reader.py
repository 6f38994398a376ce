"""HistoryReader: a turn reads from where its conversation's window last started, and gets
the same prompt as from the whole conversation."""

from __future__ import annotations

from service.content import Message, TextBlock
from service.history_reader import HistoryReader
from service.profiles import Profile
from service.prompt import PromptRules, build_request
from service.store import ConversationStore, NewMessage, StoredMessage

RULES = PromptRules(system_prompt="s", max_tokens=10, history_budget_tokens=400)
PROFILE = Profile("u", "u", "")


def prompt_of(stored: list[StoredMessage], text: str) -> tuple[list[Message], list[Message]]:
    history = [Message(m.role, m.content) for m in stored]
    request = build_request(
        RULES,
        history=history,
        estimates=[m.estimated_tokens for m in stored],
        message=Message("user", [TextBlock(text)]),
        profile=PROFILE,
        model="m",
        user_id="u",
    )
    return history, list(request.messages)


def question(number: int) -> str:
    return f"turn {number} " + "w " * (number % 9) * 6


async def add_turn(store: ConversationStore, conversation: str, number: int) -> None:
    """Store turn ``number``: its question (as the chat path stores it) and an answer."""
    words = question(number)
    await store.append_messages(
        "u",
        conversation,
        [
            NewMessage("user", [TextBlock(words)]),
            NewMessage("assistant", [TextBlock("answer " + words)]),
        ],
    )


async def test_reading_from_the_last_start_gives_the_whole_conversations_prompt(
    store: ConversationStore,
) -> None:
    reader = HistoryReader(store)
    conversation = (await store.create_conversation("u")).id
    read_sizes = []
    for number in range(80):
        text = question(number)
        stored = await reader.read("u", conversation)
        history, prompt = prompt_of(stored, text)
        _, expected = prompt_of(await store.messages("u", conversation), text)
        assert prompt == expected
        reader.remember(conversation, stored, history, prompt)
        read_sizes.append(len(stored))
        await add_turn(store, conversation, number)
    # Past the budget the reads stay bounded instead of growing with the conversation.
    assert max(read_sizes[40:]) < 60 < 2 * 79


async def test_a_cleared_conversation_is_read_from_its_new_messages(
    store: ConversationStore,
) -> None:
    reader = HistoryReader(store)
    conversation = (await store.create_conversation("u")).id
    for number in range(30):
        await add_turn(store, conversation, number)
    stored = await reader.read("u", conversation)
    history, prompt = prompt_of(stored, "q")
    reader.remember(conversation, stored, history, prompt)
    assert len(await reader.read("u", conversation)) < len(stored)
    await store.clear_conversation("u", conversation)
    await add_turn(store, conversation, 99)
    assert await reader.read("u", conversation) == await store.messages("u", conversation)


async def test_it_remembers_a_bounded_number_of_conversations(store: ConversationStore) -> None:
    reader = HistoryReader(store, remembered=2)
    ids = [(await store.create_conversation("u")).id for _ in range(3)]
    for conversation in ids:
        for number in range(30):
            await add_turn(store, conversation, number)
        stored = await reader.read("u", conversation)
        history, prompt = prompt_of(stored, "q")
        reader.remember(conversation, stored, history, prompt)
    # The oldest one was forgotten: read whole again; the others from their starts.
    assert len(await reader.read("u", ids[0])) == 60
    assert len(await reader.read("u", ids[2])) < 60


def test_a_prompt_starting_with_the_new_turn_is_not_remembered() -> None:
    reader = HistoryReader(store=None)  # type: ignore[arg-type]
    message = Message("user", [TextBlock("alone")])
    reader.remember("c", [], [], [message])
    assert reader._starts == {}
