"""What each provider receives after a failed and after a cancelled turn.

A failed or cancelled-before-output turn leaves its user message in the
conversation (marked so) with no answer. It is not asked again: the next
turn's prompt ends with the new question alone, never the two glued together
("What is 17*23?Tell me a story") nor both as one message. ChatService with
real parts: SQLite, the scheduler and each bridge on its fake over loopback.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from service.agent import AgentLoop
from service.chat import ChatService
from service.config import Settings
from service.errors import AgentError
from service.events import Started, TurnInput
from service.profiles import ProfileDirectory
from service.providers.anthropic import AnthropicBridge
from service.providers.base import Provider
from service.providers.ollama import OllamaBridge
from service.scheduler import Scheduler
from service.scheduler.memory import MemoryScheduler
from service.store import open_store
from service.tools import default_registry
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.ollama import FakeOllama
from tests.fakes.script import Reply

FIRST = "What is 17*23?"
SECOND = "Tell me a story"
KEY = "sk-history"
HANG = Reply(chunks=("never",), hang_after=0)  # holds on until the client goes away


@dataclass
class Rig:
    vendor: str
    chat: ChatService
    fake: Any  # FakeOllama | FakeAnthropic
    chat_store: Any  # the ConversationStore

    def last_user_content(self) -> str:
        """The text of the last user message the fake received, as that vendor's wire has it."""
        body = self.fake.chats[-1].json
        content = body["messages"][-1]["content"]
        if isinstance(content, str):
            return content
        texts = [block["text"] for block in content if block["type"] == "text"]
        assert len(texts) == 1, content  # one text block, not two to be concatenated
        return str(texts[0])


@pytest.fixture(params=["ollama", "anthropic"])
async def rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    vendor: str = request.param
    fake: FakeOllama | FakeAnthropic
    fake = FakeOllama() if vendor == "ollama" else FakeAnthropic(api_key=KEY)
    async with fake, open_store(f"sqlite:///{tmp_path / 'chat.db'}") as store:
        bridge: Provider
        if vendor == "ollama":
            bridge = OllamaBridge(url=fake.url, model="llama3.2")
        else:
            bridge = AnthropicBridge(
                api_key=KEY, base_url=fake.url, model="claude-t", max_retries=0
            )
        chat = ChatService(
            Settings(api_server={"request_timeout": 5.0}),
            providers={vendor: bridge},
            default_provider=vendor,
            store=store,
            scheduler=MemoryScheduler(Scheduler(slots={vendor: 1})),
            profiles=ProfileDirectory(None),
            agent=AgentLoop(default_registry(), max_rounds=1),
        )
        try:
            yield Rig(vendor, chat, fake, store)
        finally:
            await bridge.aclose()


async def test_after_a_failed_turn_only_the_new_question_is_asked(rig: Rig) -> None:
    rig.fake.push(Reply.error(500, "the model runner crashed"), Reply.text("391. Once..."))
    events: list[object] = []

    async def record(event: object) -> None:
        events.append(event)

    with pytest.raises(AgentError):
        await rig.chat.run_turn(TurnInput(user_id="u", message=FIRST, request_id="h1"), record)
    started = events[0]
    assert isinstance(started, Started)
    turn = TurnInput(
        user_id="u", message=SECOND, conversation_id=started.conversation_id, request_id="h3"
    )
    await rig.chat.run_turn(turn)
    assert rig.last_user_content() == SECOND
    stored = await rig.chat_store.messages("u", started.conversation_id)
    assert next(m.status for m in stored if m.role == "user") == "failed"  # kept, marked


async def test_after_a_cancelled_turn_only_the_new_question_is_asked(rig: Rig) -> None:
    rig.fake.push(HANG, Reply.text("391. Once..."))
    seen: list[object] = []

    async def record(event: object) -> None:
        seen.append(event)

    async def first_turn() -> None:
        await rig.chat.run_turn(TurnInput(user_id="u", message=FIRST, request_id="h2"), record)

    task = asyncio.create_task(first_turn())
    assert await rig.fake.wait_for_in_flight(1)  # the model is working on it, no output yet
    task.cancel()  # the client went away
    await asyncio.gather(task, return_exceptions=True)
    await rig.chat.wait_persisted()
    started = seen[0]
    assert isinstance(started, Started)
    again = TurnInput(
        user_id="u", message=SECOND, conversation_id=started.conversation_id, request_id="h4"
    )
    await rig.chat.run_turn(again)
    assert rig.last_user_content() == SECOND
