"""The agent loop and its transcript, against the fake Ollama through the real bridge."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from service.agent import AgentLoop, Transcript
from service.content import Message, TextBlock, ToolResultBlock, ToolUseBlock
from service.events import ChatEvent, ToolCalled, ToolReturned
from service.providers.base import CompletionRequest, TextDelta
from service.providers.ollama import OllamaBridge
from service.tools import Tool, ToolRegistry, default_registry
from tests.fakes.ollama import FakeOllama
from tests.fakes.script import Reply


@pytest.fixture
async def bridge(fake: FakeOllama) -> AsyncIterator[OllamaBridge]:
    b = OllamaBridge(url=fake.url, model="llama3.2", first_byte_timeout_s=5, idle_timeout_s=5)
    yield b
    await b.aclose()


async def ignore(_event: ChatEvent) -> None:
    pass


def request(text: str) -> CompletionRequest:
    return CompletionRequest(messages=[Message("user", [TextBlock(text)])], model="llama3.2")


async def test_tool_round_then_answer(fake: FakeOllama, bridge: OllamaBridge) -> None:
    fake.push(Reply.tool("calculator", {"expression": "2+2"}), Reply.text("Four."))
    events: list[ChatEvent] = []

    async def record(event: ChatEvent) -> None:
        events.append(event)

    transcript = Transcript("ollama", "llama3.2", "r1")
    await AgentLoop(default_registry(), max_rounds=3).run(
        bridge, request("2+2?"), transcript, record
    )
    assert [type(e) for e in events] == [ToolCalled, ToolReturned, TextDelta]
    assert transcript.text == "Four." and transcript.stop_reason == "end_turn"
    stored = transcript.to_store("complete")
    assert [m.role for m in stored] == ["assistant", "user", "assistant"]
    assert isinstance(stored[0].content[0], ToolUseBlock)
    result = stored[1].content[0]
    assert isinstance(result, ToolResultBlock) and result.content == "4"
    assert transcript.usage.input_tokens == sum(m.input_tokens for m in stored)


async def test_round_limit_stops_and_every_tool_use_gets_a_result(
    fake: FakeOllama, bridge: OllamaBridge
) -> None:
    fake.responder = lambda _request: Reply.tool("calculator", {"expression": "1+1"})
    transcript = Transcript("ollama", "llama3.2", "r2")
    await AgentLoop(default_registry(), max_rounds=2).run(
        bridge, request("loop forever"), transcript, ignore
    )
    assert len(fake.chats) == 3  # two tool rounds, then the limit
    assert transcript.stop_reason == "tool_use"
    stored = transcript.to_store("complete")
    uses = [b.id for m in stored for b in m.content if isinstance(b, ToolUseBlock)]
    results = [b for m in stored for b in m.content if isinstance(b, ToolResultBlock)]
    assert sorted(uses) == sorted(r.tool_use_id for r in results)
    assert results[-1].is_error and "limit" in results[-1].content


async def test_cancel_during_a_tool_keeps_a_valid_history(
    fake: FakeOllama, bridge: OllamaBridge
) -> None:
    started = asyncio.Event()

    async def slow(_args: dict) -> str:
        started.set()
        await asyncio.sleep(30)
        return "never"

    tools = ToolRegistry([Tool("slow", "takes forever", {"type": "object"}, slow)])
    fake.push(Reply(chunks=("Let me check.",), tool_calls=Reply.tool("slow", {}).tool_calls))
    transcript = Transcript("ollama", "llama3.2", "r3")
    task = asyncio.create_task(
        AgentLoop(tools, max_rounds=3).run(bridge, request("go"), transcript, ignore)
    )
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stored = transcript.to_store("cancelled")
    assert [m.role for m in stored] == ["assistant", "user"]
    assert stored[0].status == "cancelled"
    assert stored[0].content[0] == TextBlock("Let me check.")
    result = stored[1].content[0]
    assert isinstance(result, ToolResultBlock) and result.is_error
    assert "ended before" in result.content
