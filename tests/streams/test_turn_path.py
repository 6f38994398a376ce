"""The turn path of issue "made right": readers never hold a turn, slots end with the model call.

In process with real parts (SQLite, the in-process scheduler, the Ollama bridge
on the fake over loopback). Each test here failed on the turn path where the
turn awaited its client's writes and the slot was held through the store write.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import pytest

from service.agent import AgentLoop
from service.chat import ChatService
from service.config import Settings, StreamSection
from service.errors import Code, QueueFull
from service.events import ChatEvent, TurnInput, TurnResult
from service.profiles import ProfileDirectory
from service.providers.ollama import OllamaBridge
from service.scheduler import Scheduler
from service.scheduler.interface import (
    Admission,
    Adopted,
    RequestInfo,
    RequestScheduler,
    RequestSpec,
)
from service.scheduler.memory import MemoryScheduler
from service.store import ConversationStore
from service.store.base import NewMessage, StoredMessage
from service.streams import StreamingTurns
from service.streams.run import StreamOverrun
from service.tools import default_registry
from tests.fakes.ollama import FakeOllama
from tests.fakes.script import Reply

BUFFER = 8


@dataclass
class Rig:
    streams: StreamingTurns
    engine: Scheduler
    chat: ChatService


class GatedStore:
    """A store whose appends wait for ``gate``: a turn caught between its model call and its end."""

    def __init__(self, inner: ConversationStore) -> None:
        self._inner = inner
        self.gate = asyncio.Event()
        self.gate.set()
        self.waiting = asyncio.Event()

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    async def append_messages(
        self,
        user_id: str,
        conversation_id: str,
        messages: Sequence[NewMessage],
        *,
        create: bool = False,
    ) -> list[StoredMessage]:
        self.waiting.set()
        await self.gate.wait()
        return await self._inner.append_messages(user_id, conversation_id, messages, create=create)


@pytest.fixture
async def gated(store: ConversationStore) -> GatedStore:
    return GatedStore(store)


def build(
    fake: FakeOllama,
    store: object,
    *,
    slots: int = 1,
    max_pending: int = 100,
    wrap: Callable[[MemoryScheduler], RequestScheduler] | None = None,
) -> tuple[Rig, OllamaBridge]:
    bridge = OllamaBridge(url=fake.url, model="llama3.2", first_byte_timeout_s=5, idle_timeout_s=5)
    engine = Scheduler(slots={"ollama": slots}, max_pending=max_pending)
    port: RequestScheduler = MemoryScheduler(engine)
    if wrap is not None:
        port = wrap(port)
    chat = ChatService(
        Settings(),
        providers={"ollama": bridge},
        default_provider="ollama",
        store=store,  # type: ignore[arg-type]
        scheduler=port,
        profiles=ProfileDirectory(None),
        agent=AgentLoop(default_registry(), max_rounds=1),
    )
    streams = StreamingTurns(
        chat,
        port,
        store,
        StreamSection(buffer_events=BUFFER),  # type: ignore[arg-type]
    )
    return Rig(streams, engine, chat), bridge


@pytest.fixture
async def rig(fake: FakeOllama, store: ConversationStore) -> AsyncIterator[Rig]:
    built, bridge = build(fake, store)
    yield built
    await built.streams.close()
    await bridge.aclose()


def turn(user: str, request_id: str, message: str = "hi") -> TurnInput:
    return TurnInput(user_id=user, message=message, request_id=request_id, new_conversation=True)


async def collect(streams: StreamingTurns, t: TurnInput) -> list[ChatEvent]:
    got: list[ChatEvent] = []

    async def write(_seq: int, event: ChatEvent) -> None:
        got.append(event)

    await streams.stream(t, None, write)
    return got


async def test_a_reader_that_stops_reading_does_not_hold_the_slot(
    rig: Rig, fake: FakeOllama
) -> None:
    # A long answer for the stalled reader: more events than its buffer holds.
    fake.push(Reply.text(*[f"w{i} " for i in range(5 * BUFFER)]), Reply.text("for b"))
    stalled = asyncio.Event()
    never = asyncio.Event()

    async def stuck(_seq: int, _event: ChatEvent) -> None:
        stalled.set()
        await never.wait()  # a phone on a bad network: its writes never complete

    reader = asyncio.create_task(rig.streams.stream(turn("a", "slow"), None, stuck))
    await stalled.wait()
    # The other user's turn gets the only slot and finishes while "a" reads nothing.
    async with asyncio.timeout(10):
        events = await collect(rig.streams, turn("b", "other"))
    assert isinstance(events[-1], TurnResult) and events[-1].response == "for b"
    # The stalled reader was cut with a clear error, and (cancel policy) its turn stopped.
    with pytest.raises(StreamOverrun) as cut:
        await reader
    assert cut.value.code is Code.ABORTED and "too slowly" in cut.value.message
    assert rig.engine.status("slow", "a").state == "cancelled"
    assert rig.engine.stats().total_running == 0


async def test_a_short_answer_completes_while_its_reader_is_stuck(
    rig: Rig, fake: FakeOllama
) -> None:
    fake.push(Reply.text("short"))
    never = asyncio.Event()
    first = asyncio.Event()

    async def stuck(_seq: int, _event: ChatEvent) -> None:
        first.set()
        await never.wait()

    reader = asyncio.create_task(rig.streams.stream(turn("a", "short"), None, stuck))
    await first.wait()
    async with asyncio.timeout(10):
        while rig.engine.status("short", "a").state != "completed":
            await asyncio.sleep(0.01)
    assert rig.engine.stats().total_running == 0  # the turn never waited for its reader
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader


async def test_the_slot_is_released_when_the_model_call_ends_not_after_the_store_write(
    fake: FakeOllama, gated: GatedStore
) -> None:
    rig, bridge = build(fake, gated)
    try:
        gated.gate.clear()
        first = asyncio.create_task(collect(rig.streams, turn("a", "one")))
        await gated.waiting.wait()  # the model call is over, the store write is held
        assert rig.engine.stats().total_running == 0
        # Another user's turn gets the slot meanwhile (its own write waits at the gate too).
        second = asyncio.create_task(collect(rig.streams, turn("b", "two")))
        async with asyncio.timeout(10):
            while len(fake.chats) < 2:
                await asyncio.sleep(0.01)
        gated.gate.set()
        done = await asyncio.gather(first, second)
        assert all(isinstance(events[-1], TurnResult) for events in done)
    finally:
        await rig.streams.close()
        await bridge.aclose()


async def test_a_conversations_next_turn_waits_for_the_store_write_of_the_last(
    fake: FakeOllama, gated: GatedStore
) -> None:
    rig, bridge = build(fake, gated)
    try:
        first = await collect(rig.streams, turn("a", "one"))
        assert isinstance(first[-1], TurnResult)
        conversation = first[-1].conversation_id
        gated.gate.clear()
        gated.waiting.clear()
        second = asyncio.create_task(
            collect(
                rig.streams,
                TurnInput(
                    user_id="a", message="two", request_id="two", conversation_id=conversation
                ),
            )
        )
        await gated.waiting.wait()
        third = asyncio.create_task(
            collect(
                rig.streams,
                TurnInput(
                    user_id="a", message="three", request_id="3", conversation_id=conversation
                ),
            )
        )
        async with asyncio.timeout(5):
            while rig.engine.find("3", "a") is None:
                await asyncio.sleep(0.01)
        # The slot is free, but the conversation is not: the third turn waits, unsent.
        assert rig.engine.stats().total_running == 0
        assert rig.engine.status("3", "a").state == "queued"
        assert len(fake.chats) == 2
        gated.gate.set()
        await asyncio.gather(second, third)
        # The third turn's prompt holds the second turn's stored answer: no interleaving.
        assert [m["content"] for m in fake.chats[-1].body["messages"] if m["role"] == "user"][
            -2:
        ] == [
            "two",
            "three",
        ]
    finally:
        await rig.streams.close()
        await bridge.aclose()


async def test_a_refused_turn_leaves_no_conversation_behind(
    fake: FakeOllama, store: ConversationStore
) -> None:
    rig, bridge = build(fake, store, max_pending=0)
    try:
        done = await collect(rig.streams, turn("u", "first"))
        assert isinstance(done[-1], TurnResult)
        kept = done[-1].conversation_id
        fake.push(Reply.text("held", gate_after=1, gate=threading.Event()))
        holder = asyncio.create_task(collect(rig.streams, turn("other", "holder")))
        async with asyncio.timeout(5):
            while rig.engine.stats().total_running == 0:
                await asyncio.sleep(0.01)
        with pytest.raises(QueueFull):  # no room to wait: refused before anything is written
            await collect(rig.streams, turn("u", "refused"))
        page, _ = await store.list_conversations("u", 10)
        assert [c.id for c in page] == [kept]
        current = await store.current_conversation("u")
        assert current is not None and current.id == kept
        holder.cancel()
        await asyncio.gather(holder, return_exceptions=True)
    finally:
        await rig.streams.close()
        await bridge.aclose()


class Handover:
    """The scheduler of a replica taking over requests admitted by one that went away.

    ``orphan`` marks a submitted request as left behind; the next ``adopt`` waits
    for ``gate`` (its rows are ours, its run not yet open) and hands it over.
    """

    def __init__(self, inner: RequestScheduler) -> None:
        self._inner = inner
        self._payloads: dict[str, tuple[Admission | None, str]] = {}
        self._orphans: list[str] = []
        self.adopting = asyncio.Event()
        self.gate = asyncio.Event()
        self.looked_up = asyncio.Event()

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    async def submit(self, spec: RequestSpec) -> Admission:
        admission = await self._inner.submit(spec)
        self._payloads[spec.request_id] = (admission, spec.payload)
        return admission

    def orphan(self, request_id: str) -> None:
        self._orphans.append(request_id)

    async def adopt(self, limit: int = 50) -> list[Adopted]:
        if not self._orphans:
            return []
        self.adopting.set()
        await self.gate.wait()
        taken = [self._payloads[rid] for rid in self._orphans]
        self._orphans.clear()
        return [Adopted(admission, payload) for admission, payload in taken if admission]

    async def find(self, request_id: str, user_id: str) -> RequestInfo | None:
        found = await self._inner.find(request_id, user_id)
        self.looked_up.set()
        return found


async def test_a_watcher_arriving_during_a_take_over_follows_the_taken_over_run(
    fake: FakeOllama, store: ConversationStore
) -> None:
    # Seen in CI: a client re-attached while this replica was taking the request over
    # (recorded as its owner, its run not open yet) and was told "not available".
    handover: list[Handover] = []

    def wrap(port: MemoryScheduler) -> RequestScheduler:
        handover.append(Handover(port))
        return handover[0]  # type: ignore[return-value]

    rig, bridge = build(fake, store, wrap=wrap)
    (sched,) = handover
    adopter: asyncio.Task[None] | None = None
    try:
        fake.push(Reply.text("taken over"))
        await rig.chat.admit(turn("alice", "orphan"))  # admitted, then its replica died
        sched.orphan("orphan")
        adopter = asyncio.create_task(rig.streams.adopt_forever(interval_s=3600))
        await sched.adopting.wait()
        got: list[ChatEvent] = []

        async def found() -> None:
            pass

        async def write(_seq: int, event: ChatEvent) -> None:
            got.append(event)

        watcher = asyncio.create_task(rig.streams.watch("alice", "orphan", 0, found, write))
        await sched.looked_up.wait()  # it saw the request live and ours, with no run yet
        sched.gate.set()
        async with asyncio.timeout(10):
            await watcher
        assert isinstance(got[-1], TurnResult) and got[-1].response == "taken over"
    finally:
        if adopter is not None:
            adopter.cancel()
        await rig.streams.close()
        await bridge.aclose()
