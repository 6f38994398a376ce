"""Many streams opened at once against few slots: each ends with exactly one terminal event.

The queue's real job (many clients waiting, each told its position as it
moves) over real gRPC calls to the real service. This broke when two tasks
wrote to one call (the position watcher and the turn): grpc.aio allows one
write in flight per call, and streams ended in errors or stalled. The bench
runs the same shape with 1,000 streams and more (``make bench``); this is the
size a CI run affords.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from agent.v1 import agent_pb2 as pb
from agent.v1 import agent_pb2_grpc

from tests.e2e.stack import launch, provider_config
from tests.fakes.ollama import FakeOllama

STREAMS = 300
SLOTS = 4
USERS = 30


async def _one(stub: agent_pb2_grpc.AgentServiceStub, n: int) -> tuple[list[str], grpc.StatusCode]:
    kinds: list[str] = []
    call = stub.ChatStream(
        pb.ChatStreamRequest(
            message=f"message {n}", user_id=f"user{n % USERS}", new_conversation=True
        ),
        timeout=60,
    )
    try:
        async for event in call:
            kinds.append(event.WhichOneof("event") or "")
    except grpc.aio.AioRpcError:
        pass
    return kinds, await call.code()


async def _all(address: str) -> list[tuple[list[str], grpc.StatusCode]]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        return await asyncio.gather(*(_one(stub, n) for n in range(STREAMS)))


def test_streams_opened_at_once_against_few_slots_all_end_with_one_done(
    tmp_path: Path, fake_ollama: FakeOllama
) -> None:
    config = provider_config("ollama", fake_ollama, None)
    config["ollama"]["parallel"] = SLOTS
    config["queue"] = {"max_pending": STREAMS, "max_pending_per_user": STREAMS}
    stack = launch(tmp_path, config)
    fake_ollama.reset_records()
    try:
        results = asyncio.run(_all(stack.grpc_address))
    finally:
        stack.stop()
    bad = [(kinds[-3:], code) for kinds, code in results if code != grpc.StatusCode.OK]
    assert not bad, f"{len(bad)} of {STREAMS} streams failed, e.g. {bad[:3]}"
    for kinds, _ in results:
        assert kinds.count("done") == 1 and kinds[-1] == "done", kinds
        assert kinds.index("start") < kinds.index("done")
    # They really went through the queue: never more model calls at once than slots.
    assert fake_ollama.max_in_flight <= SLOTS
    assert len(fake_ollama.calls("/api/chat")) == STREAMS  # and each ran exactly once


pytestmark = pytest.mark.timeout(180)
