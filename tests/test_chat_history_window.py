"""ChatService sends a history cut in steps: between cuts each prompt extends the previous one."""

from __future__ import annotations

import itertools

from service.agent import AgentLoop
from service.chat import ChatService
from service.config import Settings
from service.events import TurnInput
from service.profiles import ProfileDirectory
from service.providers.ollama import OllamaBridge
from service.scheduler import Scheduler
from service.store import ConversationStore
from service.tools import default_registry
from tests.fakes.ollama import FakeOllama


async def test_a_long_conversation_keeps_its_prompt_prefix_between_cuts(
    fake: FakeOllama, store: ConversationStore
) -> None:
    settings = Settings(api={"history_budget_tokens": 600, "history_watermark": 0.5})
    bridge = OllamaBridge(url=fake.url, model="llama3.2")
    chat = ChatService(
        settings,
        providers={"ollama": bridge},
        default_provider="ollama",
        store=store,
        scheduler=Scheduler(slots={"ollama": 1}),
        profiles=ProfileDirectory(None),
        agent=AgentLoop(default_registry(), max_rounds=1),
    )
    conversation = ""
    try:
        for number in range(40):  # ~50 estimated tokens a turn: over the budget by turn 12
            turn = TurnInput(
                user_id="u",
                message=f"question {number} " + "words " * 12,
                conversation_id=conversation,
                new_conversation=not conversation,
            )
            conversation = (await chat.run_turn(turn)).conversation_id
    finally:
        await bridge.aclose()
    prompts = [call.json["messages"][1:] for call in fake.chats]  # [0] is the system prompt
    kept = [after[: len(before)] == before for before, after in itertools.pairwise(prompts)]
    cuts = kept.count(False)
    assert len(prompts[-1]) < 2 * 40 - 1  # the history was cut...
    assert 1 <= cuts <= 6  # ...in a few steps, not on every turn past the budget
    assert all(p[0]["role"] == "user" for p in prompts)


def test_the_watermark_must_be_a_share_of_the_budget() -> None:
    import pytest
    from pydantic import ValidationError

    assert Settings().api.history_watermark == 0.7
    for bad in (0, -0.5, 1.5):
        with pytest.raises(ValidationError, match="history_watermark"):
            Settings(api={"history_watermark": bad})
