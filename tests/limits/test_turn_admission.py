"""Admission through ChatService: refused requests do not spend the rate; running turns reserve."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from service.agent import AgentLoop
from service.chat import ChatService
from service.config import Settings
from service.errors import LimitReached
from service.events import Started, TurnInput, TurnResult
from service.profiles import ProfileDirectory
from service.providers.ollama import OllamaBridge
from service.scheduler import Scheduler
from service.scheduler.memory import MemoryScheduler
from service.store import ConversationStore
from service.tools import default_registry
from service.tools.registry import Tool, ToolRegistry
from tests.fakes.ollama import FakeOllama
from tests.fakes.script import Reply
from tests.turn_stream import stream

Factory = Callable[[dict[str, Any]], ChatService]


@pytest.fixture
async def chat_with(fake: FakeOllama, store: ConversationStore) -> AsyncIterator[Factory]:
    bridge = OllamaBridge(url=fake.url, model="llama3.2", first_byte_timeout_s=5, idle_timeout_s=5)

    def build(limits: dict[str, Any]) -> ChatService:
        return ChatService(
            Settings(limits=limits, api={"max_tokens": 50, "history_budget_tokens": 100}),
            providers={"ollama": bridge},
            default_provider="ollama",
            store=store,
            scheduler=MemoryScheduler(Scheduler(slots={"ollama": 2})),
            profiles=ProfileDirectory(None),
            agent=AgentLoop(default_registry(), max_rounds=2),
        )

    yield build
    await bridge.aclose()


async def finish(events: AsyncIterator[object]) -> TurnResult:
    last: object = None
    async for event in events:
        last = event
    assert isinstance(last, TurnResult)
    return last


async def refused_beside_a_running_turn(chat: ChatService, fake: FakeOllama) -> None:
    """A turn runs (10 in, 5 out); a second, sent meanwhile, is refused by its reservation."""
    fake.push(Reply.text("one", " two", input_tokens=10, output_tokens=5), Reply.text("next"))
    running = stream(chat, TurnInput(user_id="u", message="hi", request_id="req-1"))
    try:
        assert isinstance(await anext(running), Started)
        with pytest.raises(LimitReached) as refused:
            await chat.run_turn(
                TurnInput(user_id="u", message="hi", new_conversation=True, request_id="second")
            )
        assert refused.value.limit == "tokens_per_day"
        assert "reserved by 1 running turn(s)" in refused.value.message
        await finish(running)  # settled at its real 15 tokens
    finally:
        await running.aclose()


async def test_requests_refused_by_max_active_do_not_spend_the_rate(
    chat_with: Factory, fake: FakeOllama
) -> None:
    chat = chat_with({"requests_per_minute": 2, "max_active": 1})
    fake.push(Reply.text("one", " two", " three"), Reply.text("again"))
    running = stream(chat, TurnInput(user_id="u", message="hi", request_id="req-1"))
    try:
        assert isinstance(await anext(running), Started)  # it holds the one active slot
        for n in (2, 3, 4):
            with pytest.raises(LimitReached) as refused:
                await chat.run_turn(TurnInput(user_id="u", message="hi", request_id=f"req-{n}"))
            assert refused.value.limit == "max_active"  # not the rate: each was refunded
        await finish(running)
    finally:
        await running.aclose()
    result = await chat.run_turn(TurnInput(user_id="u", message="hi", request_id="req-5"))
    assert result.response == "again"  # the second of two requests per minute


async def test_a_running_turn_reserves_its_estimate_until_it_settles(
    chat_with: Factory, fake: FakeOllama
) -> None:
    # A turn reserves its message (a few tokens), the system prompt, the tool schemas,
    # the history budget (100) and its output cap (50): over 150, so a second turn does
    # not fit while the first runs.
    chat = chat_with({"tokens_per_day": 150})
    await refused_beside_a_running_turn(chat, fake)
    result = await chat.run_turn(
        TurnInput(user_id="u", message="hi", new_conversation=True, request_id="third")
    )
    assert result.response == "next"


async def _noop(_arguments: dict[str, Any]) -> str:
    return ""


@pytest.mark.parametrize("long_part", ["configured prompt", "profile prompt", "tool schemas"])
async def test_a_turn_reserves_what_it_sends_beside_the_history(
    long_part: str, tmp_path: Path, fake: FakeOllama, store: ConversationStore
) -> None:
    # Without the long part a turn reserves under 200 tokens (a short system prompt, no
    # tools, the message, history budget 100, output cap 50), so a second one would fit
    # in 400 next to it. Every model call also sends the system prompt and the tool
    # schemas: 2,000 characters of either is some 500 tokens the reservation must hold.
    long_text = "x" * 2000
    (tmp_path / "u.yaml").write_text(
        f"system_prompt: {long_text if long_part == 'profile prompt' else 'Be brief.'}\n"
    )
    tools = ToolRegistry()
    if long_part == "tool schemas":
        tools.register(Tool("lookup", long_text, {"type": "object", "properties": {}}, _noop))
    bridge = OllamaBridge(url=fake.url, model="llama3.2", first_byte_timeout_s=5, idle_timeout_s=5)
    api: dict[str, Any] = {"max_tokens": 50, "history_budget_tokens": 100}
    if long_part == "configured prompt":
        api["system_prompt"] = long_text
    chat = ChatService(
        Settings(limits={"tokens_per_day": 400}, api=api),
        providers={"ollama": bridge},
        default_provider="ollama",
        store=store,
        scheduler=MemoryScheduler(Scheduler(slots={"ollama": 2})),
        profiles=ProfileDirectory(tmp_path),
        agent=AgentLoop(tools, max_rounds=1),
    )
    try:
        await refused_beside_a_running_turn(chat, fake)
    finally:
        await bridge.aclose()
