"""StreamingTurns in-process with real parts (SQLite, scheduler, Ollama bridge on the fake)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from service.agent import AgentLoop
from service.chat import ChatService
from service.config import Settings, StreamSection
from service.errors import AgentError, Code
from service.events import ChatEvent, Started, TurnInput
from service.profiles import ProfileDirectory
from service.providers.base import TextDelta
from service.providers.ollama import OllamaBridge
from service.scheduler import Scheduler
from service.scheduler.memory import MemoryScheduler
from service.store import ConversationStore
from service.streams import StreamingTurns
from service.tools import default_registry
from tests.fakes.ollama import FakeOllama
from tests.fakes.script import Reply

WINDOW_S = 0.05


@pytest.fixture
async def parts(
    fake: FakeOllama, store: ConversationStore
) -> AsyncIterator[tuple[StreamingTurns, Scheduler]]:
    bridge = OllamaBridge(url=fake.url, model="llama3.2", first_byte_timeout_s=5, idle_timeout_s=5)
    scheduler = Scheduler(slots={"ollama": 1})
    port = MemoryScheduler(scheduler)
    chat = ChatService(
        Settings(),
        providers={"ollama": bridge},
        default_provider="ollama",
        store=store,
        scheduler=port,
        profiles=ProfileDirectory(None),
        agent=AgentLoop(default_registry(), max_rounds=2),
    )
    streams = StreamingTurns(chat, port, store, StreamSection(resume_window_s=WINDOW_S))
    yield streams, scheduler
    await streams.close()
    await bridge.aclose()


def turn(request_id: str, message: str = "hi") -> TurnInput:
    return TurnInput(user_id="u", message=message, new_conversation=True, request_id=request_id)


async def leave_after_first_text(
    streams: StreamingTurns, t: TurnInput, policy: str | None
) -> list[tuple[int, ChatEvent]]:
    """Stream ``t`` in a task the way a handler does, and cancel that task after one text."""
    got: list[tuple[int, ChatEvent]] = []
    texted = asyncio.Event()

    async def write(seq: int, event: ChatEvent) -> None:
        got.append((seq, event))
        if isinstance(event, TextDelta):
            texted.set()

    caller = asyncio.create_task(streams.stream(t, policy, write))  # type: ignore[arg-type]
    await texted.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    return got


async def until(predicate: object, what: str) -> None:
    async with asyncio.timeout(5):
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.005)


async def test_with_continue_the_turn_outlives_its_caller(
    parts: tuple[StreamingTurns, Scheduler], fake: FakeOllama, store: ConversationStore
) -> None:
    streams, scheduler = parts
    fake.push(Reply.text("one", " two", " three", chunk_delay_s=0.05))
    got = await leave_after_first_text(streams, turn("r1"), "continue")
    assert [(seq, type(e)) for seq, e in got] == [(1, Started), (2, TextDelta)]
    result = await streams.answer(turn("r1"), None)  # a retry attaches
    assert result.response == "one two three"
    assert len(fake.chats) == 1 and fake.chats[0].disconnected_at is None
    stored = await store.messages("u", result.conversation_id)
    assert [m.role for m in stored] == ["user", "assistant"]
    assert scheduler.status("r1", "u").state == "completed"


async def test_with_cancel_the_caller_going_away_cancels_the_turn(
    parts: tuple[StreamingTurns, Scheduler], fake: FakeOllama
) -> None:
    streams, scheduler = parts
    fake.push(Reply.text("one", " two", hang_after=1))
    await leave_after_first_text(streams, turn("r1"), None)  # the default policy is cancel
    assert await fake.disconnected(0, timeout=1.0)  # the fake notices a moment later
    # The turn's own task ends it (after storing what the user saw): wait for that.
    await until(lambda: scheduler.status("r1", "u").state == "cancelled", "the turn's end")
    with pytest.raises(AgentError) as retried:
        await streams.answer(turn("r1"), None)
    assert retried.value.code is Code.CANCELLED


async def test_the_same_id_with_another_message_is_refused(
    parts: tuple[StreamingTurns, Scheduler], fake: FakeOllama
) -> None:
    streams, _ = parts
    await streams.answer(turn("r1"), None)
    with pytest.raises(AgentError) as clash:
        await streams.answer(turn("r1", "something else"), None)
    assert clash.value.code is Code.ALREADY_EXISTS and "different message" in clash.value.message
    assert len(fake.chats) == 1


async def test_an_abandoned_waiting_request_is_cancelled_after_the_window(
    parts: tuple[StreamingTurns, Scheduler], fake: FakeOllama
) -> None:
    streams, scheduler = parts
    fake.push(Reply.text("held", hang_after=0))
    holder = asyncio.create_task(streams.answer(turn("holder"), "cancel"))
    await until(lambda: len(fake.chats) == 1, "the holder to reach the model")

    async def leave_when_queued(seq: int, event: ChatEvent) -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await streams.stream(turn("waiting"), "continue", leave_when_queued)
    assert scheduler.status("waiting", "u").state == "queued"  # the window has not passed
    await until(lambda: scheduler.status("waiting", "u").state == "cancelled", "the cancel")
    assert scheduler.stats().total_waiting == 0
    holder.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holder
    assert len(fake.chats) == 1


async def test_a_refused_request_does_not_take_its_id(
    parts: tuple[StreamingTurns, Scheduler],
) -> None:
    streams, _ = parts
    with pytest.raises(AgentError) as refused:
        await streams.answer(
            TurnInput(user_id="u", message="hi", priority=99, request_id="r1"), None
        )
    assert refused.value.code is Code.INVALID_ARGUMENT
    assert streams.runs.get("u", "r1") is None
    assert (await streams.answer(turn("r1", "fixed"), None)).request_id == "r1"
