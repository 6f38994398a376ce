"""ChatService with real parts (SQLite, scheduler, Ollama bridge on the fake): turn lifecycle."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from service.agent import AgentLoop
from service.chat import ChatService
from service.config import Settings
from service.errors import (
    DeadlineExceeded,
    InvalidRequest,
    NotFound,
    RequestCancelled,
    ServiceUnavailable,
)
from service.events import Started, TurnInput, TurnResult
from service.profiles import ProfileDirectory
from service.providers.base import TextDelta
from service.providers.ollama import OllamaBridge
from service.scheduler import Scheduler
from service.scheduler.memory import MemoryScheduler
from service.store import ConversationStore
from service.tools import default_registry
from tests.fakes.ollama import FakeOllama
from tests.fakes.script import Reply
from tests.turn_stream import stream


@pytest.fixture
async def parts(
    fake: FakeOllama, store: ConversationStore
) -> AsyncIterator[tuple[ChatService, Scheduler]]:
    settings = Settings(api_server={"request_timeout": 1.0})
    bridge = OllamaBridge(url=fake.url, model="llama3.2", first_byte_timeout_s=5, idle_timeout_s=5)
    scheduler = Scheduler(slots={"ollama": 1})
    chat = ChatService(
        settings,
        providers={"ollama": bridge},
        default_provider="ollama",
        store=store,
        scheduler=MemoryScheduler(scheduler),
        profiles=ProfileDirectory(None),
        agent=AgentLoop(default_registry(), max_rounds=2),
    )
    yield chat, scheduler
    await bridge.aclose()


async def test_closing_the_turn_mid_stream_cancels_upstream_and_stores_what_was_seen(
    parts: tuple[ChatService, Scheduler], fake: FakeOllama, store: ConversationStore
) -> None:
    chat, scheduler = parts
    fake.push(Reply.text("seen", " unseen", " never", chunk_delay_s=0.2))
    turn = stream(chat, TurnInput(user_id="u", message="hi", request_id="req-1"))
    started = await anext(turn)
    assert isinstance(started, Started)
    assert await anext(turn) == TextDelta("seen")
    await turn.aclose()  # the consumer goes away at a yield

    # The upstream connection is closed by then (the fake, a thread of its own,
    # notices a moment later), long before the reply's remaining 0.4 s.
    assert await fake.disconnected(len(fake.chats) - 1, timeout=0.3)
    assert scheduler.status("req-1", "u").state == "cancelled"
    assert scheduler.stats().total_running == 0
    messages = await store.messages("u", started.conversation_id)
    assert [(m.role, m.status) for m in messages] == [
        ("user", "cancelled"),
        ("assistant", "cancelled"),
    ]
    assert messages[1].content[0].text == "seen"  # type: ignore[union-attr]


async def test_total_deadline_fails_the_turn_and_keeps_the_partial_answer(
    parts: tuple[ChatService, Scheduler], fake: FakeOllama, store: ConversationStore
) -> None:
    chat, scheduler = parts
    fake.push(Reply.text("slow", " and", " slower", chunk_delay_s=0.6))
    events = []
    with pytest.raises(DeadlineExceeded, match="request_timeout"):
        async for event in stream(chat, TurnInput(user_id="u", message="hi", request_id="r2")):
            events.append(event)
    assert scheduler.status("r2", "u").state == "failed"
    conversation_id = events[0].conversation_id
    messages = await store.messages("u", conversation_id)
    assert [m.status for m in messages] == ["failed", "failed"]


async def test_queue_wait_deadline(parts: tuple[ChatService, Scheduler], fake: FakeOllama) -> None:
    chat, scheduler = parts
    holder = scheduler.submit(user_id="a", provider="ollama")  # the only slot, no deadline
    assert holder.holds_slot
    waiter = stream(chat, TurnInput(user_id="b", message="wait", request_id="w"))
    with pytest.raises(DeadlineExceeded, match="queue"):
        async for _ in waiter:
            pass
    assert scheduler.status("w", "b").state == "failed"
    assert fake.chats == []  # the waiter never reached the model
    scheduler.finish(holder, "completed")


async def test_commands_do_not_touch_the_queue_or_the_model(
    parts: tuple[ChatService, Scheduler], fake: FakeOllama
) -> None:
    chat, scheduler = parts
    events = [e async for e in stream(chat, TurnInput(user_id="u", message="/help"))]
    assert isinstance(events[-1], TurnResult) and events[-1].provider == "command"
    assert fake.chats == [] and scheduler.stats().total_running == 0


@pytest.mark.parametrize(
    ("turn", "problem"),
    [
        (TurnInput(user_id="u", message=" "), "message"),
        (TurnInput(user_id="u", message="x", priority=0), "priority"),
        (TurnInput(user_id="u", message="x", request_id="bad id!"), "request_id"),
        (TurnInput(user_id="u", message="x", provider="openai"), "not configured"),
        (TurnInput(user_id="u", message="x" * 100_001), "max_message_chars"),
    ],
)
async def test_invalid_turns(
    parts: tuple[ChatService, Scheduler], turn: TurnInput, problem: str
) -> None:
    chat, _ = parts
    with pytest.raises(InvalidRequest, match=problem):
        await anext(stream(chat, turn))


async def test_same_conversation_turns_run_in_arrival_order(
    parts: tuple[ChatService, Scheduler], fake: FakeOllama, store: ConversationStore
) -> None:
    chat, _ = parts
    first = [e async for e in stream(chat, TurnInput(user_id="u", message="zero"))]
    conversation_id = first[-1].conversation_id
    fake.push(Reply.text("one", chunk_delay_s=0.1), Reply.text("two"), Reply.text("three"))

    async def run(text: str) -> None:
        async for _ in stream(
            chat, TurnInput(user_id="u", message=text, conversation_id=conversation_id)
        ):
            pass

    await asyncio.gather(run("q1"), run("q2"), run("q3"))
    stored = await store.messages("u", conversation_id)
    texts = [m.content[0].text for m in stored]  # type: ignore[union-attr]
    assert texts == ["zero", "echo: zero", "q1", "one", "q2", "two", "q3", "three"]


async def test_a_turn_waiting_for_its_conversation_is_visible_and_cancellable(
    parts: tuple[ChatService, Scheduler], fake: FakeOllama, store: ConversationStore
) -> None:
    chat, scheduler = parts
    first = [e async for e in stream(chat, TurnInput(user_id="u", message="zero"))]
    conversation_id = first[-1].conversation_id
    fake.push(Reply.text("slow", chunk_delay_s=0.3))
    running = stream(chat, TurnInput(user_id="u", message="q1", conversation_id=conversation_id))
    assert isinstance(await anext(running), Started)
    blocked = stream(
        chat, TurnInput(user_id="u", message="q2", conversation_id=conversation_id, request_id="q2")
    )
    queued = await anext(blocked)  # told at once that it waits behind the running turn
    assert queued.request_id == "q2" and queued.position == 0  # next, once q1 ends
    waiter = asyncio.ensure_future(anext(blocked))
    info = scheduler.status("q2", "u")  # the scheduler owns it, like any waiting request
    assert info.state == "queued" and info.position == 0
    assert scheduler.stats().total_waiting == 1
    with pytest.raises(NotFound):
        scheduler.status("q2", "intruder")
    assert scheduler.cancel("q2", "u").state == "cancelled"
    with pytest.raises(RequestCancelled):
        await waiter
    async for _ in running:
        pass
    stored = await store.messages("u", conversation_id)
    assert [m.content[0].text for m in stored][-2:] == ["q1", "slow"]  # type: ignore[union-attr]
    assert "q2" not in [m.content[0].text for m in stored]  # type: ignore[union-attr]


async def test_interrupted_running_turns_end_unavailable_and_keep_what_was_seen(
    parts: tuple[ChatService, Scheduler], fake: FakeOllama, store: ConversationStore
) -> None:
    chat, scheduler = parts
    fake.push(Reply.text("part", " rest", chunk_delay_s=0.3))
    turn = stream(chat, TurnInput(user_id="u", message="long job", request_id="long"))
    started = await anext(turn)
    assert await anext(turn) == TextDelta("part")
    assert chat.interrupt_running("shutting down") == 1
    with pytest.raises(ServiceUnavailable, match="shutting down"):
        await anext(turn)
    assert scheduler.status("long", "u").state == "failed"
    assert await fake.disconnected(0, timeout=1.0)
    messages = await store.messages("u", started.conversation_id)
    assert [(m.role, m.status) for m in messages] == [("user", "failed"), ("assistant", "failed")]
