"""A turn whose answer was streamed while the database was down: stored, or ended with the 503.

ChatService with real parts (the PostgreSQL store on a private cluster this
module stops, the scheduler, the Ollama bridge on the fake). A turn acknowledged
as done is in the store; one the store could not take in time ends with
StoreUnavailable (503 STORE_UNAVAILABLE), never with a done and nothing stored.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator

import pytest

from service.agent import AgentLoop
from service.chat import ChatService
from service.config import Settings
from service.errors import Reason, StoreUnavailable
from service.events import Started, TurnInput
from service.profiles import ProfileDirectory
from service.providers.base import TextDelta
from service.providers.ollama import OllamaBridge
from service.scheduler import Scheduler
from service.scheduler.memory import MemoryScheduler
from service.store import PostgresStore
from service.tools import default_registry
from tests.fakes.ollama import FakeOllama
from tests.fakes.script import Reply
from tests.store.private_postgres import PrivateCluster, private_cluster
from tests.turn_stream import TurnStream, stream


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    with private_cluster() as started:
        yield started


@pytest.fixture
async def running(cluster: PrivateCluster) -> AsyncIterator[PrivateCluster]:
    yield cluster
    if not cluster.up:
        await asyncio.to_thread(cluster.start)


def _chat(fake: FakeOllama, store: PostgresStore) -> tuple[ChatService, OllamaBridge]:
    bridge = OllamaBridge(url=fake.url, model="llama3.2", first_byte_timeout_s=5, idle_timeout_s=5)
    chat = ChatService(
        Settings(api_server={"request_timeout": 30.0}),
        providers={"ollama": bridge},
        default_provider="ollama",
        store=store,
        scheduler=MemoryScheduler(Scheduler(slots={"ollama": 1})),
        profiles=ProfileDirectory(None),
        agent=AgentLoop(default_registry(), max_rounds=2),
    )
    return chat, bridge


async def _stream_until_first_token(chat: ChatService, request_id: str) -> TurnStream:
    turn = stream(chat, TurnInput(user_id="u", message="hi", request_id=request_id))
    assert isinstance(await anext(turn), Started)
    assert await anext(turn) == TextDelta("streamed")
    return turn


async def test_a_turn_the_store_cannot_take_in_time_ends_with_the_503(
    running: PrivateCluster, fake: FakeOllama
) -> None:
    gate = threading.Event()
    fake.push(Reply.text("streamed", " answer", gate=gate, gate_after=1))
    async with PostgresStore(running.url, schema="turn_lost", write_retry_s=0.5) as store:
        chat, bridge = _chat(fake, store)
        try:
            turn = await _stream_until_first_token(chat, "req-down")
            await asyncio.to_thread(running.stop)
            gate.set()
            assert await anext(turn) == TextDelta(" answer")
            with pytest.raises(StoreUnavailable) as caught:
                await anext(turn)
            assert caught.value.reason is Reason.STORE_UNAVAILABLE
            assert caught.value.retry_after_s
        finally:
            await bridge.aclose()
        await asyncio.to_thread(running.start)
        # Not stored, and said so: a new conversation exists only with its first messages.
        assert await store.current_conversation("u") is None


async def test_a_turn_streamed_through_a_restart_is_stored_and_then_done(
    running: PrivateCluster, fake: FakeOllama
) -> None:
    gate = threading.Event()
    fake.push(Reply.text("streamed", " answer", gate=gate, gate_after=1))
    async with PostgresStore(running.url, schema="turn_kept", write_retry_s=60) as store:
        chat, bridge = _chat(fake, store)
        try:
            turn = await _stream_until_first_token(chat, "req-kept")
            await asyncio.to_thread(running.stop)
            gate.set()
            assert await anext(turn) == TextDelta(" answer")
            result = asyncio.create_task(anext(turn))
            while not store.outage.down:  # its write failed once and is waiting
                assert not result.done()
                await asyncio.sleep(0.01)
            await asyncio.to_thread(running.start)
            done = await result
        finally:
            await bridge.aclose()
        assert done.response == "streamed answer"
        rows = await store.messages("u", done.conversation_id)
        assert [(m.role, m.request_id) for m in rows] == [
            ("user", "req-kept"),
            ("assistant", "req-kept"),
        ]
