"""A revoked token's waiting requests are cancelled (UNAUTHENTICATED); running ones finish.

In process: a real users file reloaded by the Authenticator, the scheduler
behind its port (in process, and PostgreSQL where that is the point),
StreamingTurns and the Ollama bridge on the fake.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from service.agent import AgentLoop
from service.auth import Authenticator, Principal
from service.chat import ChatService
from service.config import Settings, StreamSection
from service.context import Call, enter_call
from service.errors import Code, Unauthenticated
from service.events import ChatEvent, TurnInput, TurnResult
from service.profiles import ProfileDirectory
from service.providers.ollama import OllamaBridge
from service.revocation import Revocations
from service.scheduler import Scheduler
from service.scheduler.interface import RequestScheduler
from service.scheduler.memory import MemoryScheduler
from service.store import ConversationStore
from service.streams import StreamingTurns
from service.tools import default_registry
from tests.fakes.ollama import FakeOllama
from tests.fakes.script import Reply
from tests.scheduler.contract.conftest import Backend, until
from tests.scheduler.contract.conftest import backend as backend  # the fixture, both adapters


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    """alice and bob in a users file, and the service parts that serve them in process."""

    users: Path
    clock: Clock
    auth: Authenticator
    revocations: Revocations
    bridge: OllamaBridge
    streams: StreamingTurns

    async def close(self) -> None:
        await self.streams.close()
        await self.bridge.aclose()


def rig(tmp_path: Path, fake: FakeOllama, store: ConversationStore, port: RequestScheduler) -> Rig:
    users = tmp_path / "users.yaml"
    users.write_text("alice: alice-token\nbob: bob-token\n")
    clock = Clock()
    auth = Authenticator(users_file=users, reload_interval_s=1.0, clock=clock)
    revocations = Revocations(port)
    auth.on_revoked(revocations.revoked)
    bridge = OllamaBridge(url=fake.url, model="llama3.2", first_byte_timeout_s=5, idle_timeout_s=5)
    chat = ChatService(
        Settings(),
        providers={"ollama": bridge},
        default_provider="ollama",
        store=store,
        scheduler=port,
        profiles=ProfileDirectory(None),
        agent=AgentLoop(default_registry(), max_rounds=1),
        still_valid=auth.still_valid,
    )
    streams = StreamingTurns(chat, port, store, StreamSection())
    return Rig(users, clock, auth, revocations, bridge, streams)


async def test_revoking_a_token_cancels_its_waiting_requests_and_lets_running_ones_finish(
    tmp_path: Path, fake: FakeOllama, store: ConversationStore
) -> None:
    engine = Scheduler(slots={"ollama": 1})
    r = rig(tmp_path, fake, store, MemoryScheduler(engine))
    users, clock, auth, revocations, streams = r.users, r.clock, r.auth, r.revocations, r.streams
    gate = threading.Event()
    fake.push(Reply.text("alice's", " answer", gate=gate, gate_after=1))

    async def run(user: str, request_id: str) -> list[ChatEvent]:
        got: list[ChatEvent] = []

        async def write(_seq: int, event: ChatEvent) -> None:
            got.append(event)

        turn = TurnInput(user_id=user, message="hi", request_id=request_id, new_conversation=True)
        await streams.stream(turn, None, write)
        return got

    try:
        running = asyncio.create_task(run("alice", "running"))
        async with asyncio.timeout(5):
            while len(fake.chats) < 1:
                await asyncio.sleep(0.01)
        waiting = [asyncio.create_task(run("alice", f"wait-{i}")) for i in range(3)]
        bobs = asyncio.create_task(run("bob", "bob-1"))
        async with asyncio.timeout(5):
            while engine.stats().total_waiting < 4:
                await asyncio.sleep(0.01)

        users.write_text("bob: bob-token\n")  # alice's token is revoked
        clock.now = 2.0
        assert auth.authenticate("Bearer bob-token").user_id == "bob"  # a call notices the change
        await revocations.settle()

        for task in waiting:
            with pytest.raises(Unauthenticated) as refused:
                await task
            assert refused.value.code is Code.UNAUTHENTICATED
            assert "revoked" in refused.value.message
        gate.set()  # the running turn was authorised when it started: it finishes
        done = await running
        assert isinstance(done[-1], TurnResult) and done[-1].response == "alice's answer"
        assert isinstance((await bobs)[-1], TurnResult)  # bob is untouched
        assert len(fake.chats) == 2  # no model call for any revoked waiting request
    finally:
        gate.set()
        await r.close()


async def test_a_request_that_enters_the_queue_after_the_revocation_listed_it_does_not_run(
    tmp_path: Path, fake: FakeOllama, store: ConversationStore, backend: Backend
) -> None:
    # The race: alice authenticates, the reload revokes her token and its cancel lists
    # her requests (none yet), and only then does her request reach the queue.
    port = await backend.make(slots={"ollama": 1})
    r = rig(tmp_path, fake, store, port)
    users, clock, auth, revocations, streams = r.users, r.clock, r.auth, r.revocations, r.streams
    gate = threading.Event()
    fake.push(Reply.text("bob's", " answer", gate=gate, gate_after=1))

    async def run(caller: Principal, request_id: str) -> list[ChatEvent]:
        enter_call(Call("/agent.v1.AgentService/ChatStream", caller, request_id))  # as the RPC
        got: list[ChatEvent] = []

        async def write(_seq: int, event: ChatEvent) -> None:
            got.append(event)

        turn = TurnInput(
            user_id=caller.user_id, message="hi", request_id=request_id, new_conversation=True
        )
        await streams.stream(turn, None, write)
        return got

    async def alice_waits() -> bool:
        return any(info.state == "queued" for info in await port.requests("alice"))

    try:
        running = asyncio.create_task(run(auth.authenticate("Bearer bob-token"), "bob-1"))
        await until(lambda: len(fake.chats) >= 1)  # bob holds the only slot
        alice = auth.authenticate("Bearer alice-token")

        users.write_text("bob: bob-token\n")  # alice's token is revoked
        clock.now = 2.0
        auth.authenticate("Bearer bob-token")  # the reload
        await revocations.settle()  # its cancel is over: it found nothing of alice's

        late = asyncio.create_task(run(alice, "alice-late"))
        await until(alice_waits)
        gate.set()
        assert isinstance((await running)[-1], TurnResult)
        with pytest.raises(Unauthenticated) as refused:
            await late  # at its grant
        assert refused.value.code is Code.UNAUTHENTICATED
        assert "revoked" in refused.value.message
        assert len(fake.chats) == 1  # alice's request never reached the model
        info = await port.status("alice-late", "alice")
        assert info.state == "failed"
    finally:
        gate.set()
        await r.close()
