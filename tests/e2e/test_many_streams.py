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
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from agent.v1 import agent_pb2 as pb
from agent.v1 import agent_pb2_grpc

from tests.e2e.queue_helpers import ReplyBook, SlotHolder, chat_body, queue_stack
from tests.e2e.stack import launch, provider_config
from tests.fakes.ollama import FakeOllama
from tests.gateway_http import gateway_async_client, gateway_client

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


# --- the same shape through the gateway, with errors asked for --------------------

SSE_STREAMS = 200
CANCELLED = {i for i in range(SSE_STREAMS) if i % 40 == 7}  # their owners cancel them
INVALID = {i for i in range(SSE_STREAMS) if i % 40 == 13}  # priority 42: refused at once


@dataclass
class Seen:
    status: int = 0
    events: list[str] = field(default_factory=list)
    error: dict[str, Any] = field(default_factory=dict)
    waiting: asyncio.Event = field(default_factory=asyncio.Event)


async def _sse(client: httpx.AsyncClient, body: dict[str, Any], seen: Seen) -> None:
    async with client.stream("POST", "/api/chat/stream", json=body) as response:
        seen.status = response.status_code
        if response.status_code != 200:
            await response.aread()
            seen.waiting.set()
            return
        event = ""
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
                seen.events.append(event)
                seen.waiting.set()
            elif line.startswith("data:") and event == "error":
                seen.error = json.loads(line[5:])


async def _through_the_gateway(url: str, holder: SlotHolder) -> list[Seen]:
    seen = [Seen() for _ in range(SSE_STREAMS)]
    bodies = []
    for i in range(SSE_STREAMS):
        body = chat_body(f"sse{i % USERS}", f"sse message {i}")
        if i in INVALID:
            body["priority"] = 42
        bodies.append(body)
    limits = httpx.Limits(max_connections=SSE_STREAMS + 10)
    async with gateway_async_client(url, timeout=60, limits=limits) as client:
        streams = [
            asyncio.create_task(_sse(client, body, s)) for body, s in zip(bodies, seen, strict=True)
        ]
        # Every slot is held: each stream is told it waits (or refused) before any runs.
        async with asyncio.timeout(60):
            for s in seen:
                await s.waiting.wait()
        for i in sorted(CANCELLED):
            body = bodies[i]
            answer = await client.post(
                "/api/queue/cancel",
                json={"request_id": body["request_id"], "user_id": body["user_id"]},
            )
            assert answer.status_code == 200, answer.text
        await asyncio.to_thread(holder.release)
        async with asyncio.timeout(120):
            await asyncio.gather(*streams)
    return seen


def test_sse_streams_opened_at_once_end_with_one_terminal_event_and_only_the_errors_asked_for(
    tmp_path: Path, fake_ollama: FakeOllama
) -> None:
    book = ReplyBook(fake_ollama)
    stack = queue_stack(
        tmp_path,
        fake_ollama,
        ollama={"parallel": SLOTS},
        queue={"max_pending": SSE_STREAMS + SLOTS, "max_pending_per_user": SSE_STREAMS},
    )
    fake_ollama.reset_records()
    try:
        with gateway_client(stack.url, timeout=30) as client:
            holder = SlotHolder(stack, book, client)
            seen = asyncio.run(_through_the_gateway(stack.url, holder))
    finally:
        stack.stop()
    for i, s in enumerate(seen):
        terminals = [e for e in s.events if e in ("done", "error")]
        if i in INVALID:
            assert s.status == 422 and not s.events, (i, s)
        elif i in CANCELLED:
            assert s.status == 200 and terminals == ["error"], (i, s)
            assert s.error["code"] == "cancelled", (i, s)
        else:
            assert s.status == 200 and terminals == ["done"], (i, s)
            assert s.events[-1] == "done" and "queued" in s.events, (i, s)
    assert fake_ollama.max_in_flight <= SLOTS
    ran = SSE_STREAMS - len(INVALID) - len(CANCELLED)
    assert len(fake_ollama.calls("/api/chat")) == ran + SLOTS  # the holders' and each once


pytestmark = pytest.mark.timeout(180)
