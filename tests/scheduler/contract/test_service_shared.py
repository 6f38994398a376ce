"""Two service instances with ``scheduler.backend: postgres`` share one Ollama slot."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import grpc
import pytest
from agent.v1 import agent_pb2 as pb
from agent.v1 import agent_pb2_grpc

from service.config import Settings
from service.scheduler.postgres import PostgresScheduler
from service.server import running_service
from tests.fakes.ollama import FakeOllama
from tests.fakes.script import Reply
from tests.scheduler.contract.conftest import Backend

pytestmark = pytest.mark.postgres


def settings_for(url: str, fake: FakeOllama, replica: str) -> Settings:
    return Settings(
        grpc={"address": "127.0.0.1:0", "shutdown_grace_s": 10},
        metrics={"address": ""},
        store={"url": url},
        scheduler={"backend": "postgres", "replica_id": replica},
        api={"provider": "ollama"},
        ollama={"url": fake.url, "parallel": 1},
    )


async def first_event(stream: AsyncIterator[pb.ChatStreamEvent]) -> pb.ChatStreamEvent:
    return await anext(aiter(stream))


async def test_two_service_replicas_share_the_slot_and_both_finish(pg: Backend) -> None:
    url = f"{pg.url}{'&' if '?' in pg.url else '?'}schema={pg.schema}"
    gate = threading.Event()
    async with FakeOllama() as fake, AsyncExitStack() as stack:
        fake.push(Reply(chunks=("held ", "slot"), gate=gate, gate_after=1))
        fake.push(Reply(chunks=("second",)))
        services = [
            await stack.enter_async_context(running_service(settings_for(url, fake, name)))
            for name in ("one", "two")
        ]
        assert all(isinstance(s.scheduler, PostgresScheduler) for s in services)
        channels = [
            await stack.enter_async_context(grpc.aio.insecure_channel(f"127.0.0.1:{s.port}"))
            for s in services
        ]
        one, two = (agent_pb2_grpc.AgentServiceStub(c) for c in channels)
        first = aiter(one.ChatStream(pb.ChatStreamRequest(message="hi", user_id="a")))
        while (await anext(first)).WhichOneof("event") != "text_delta":
            pass  # replica one holds the only slot
        second = aiter(two.ChatStream(pb.ChatStreamRequest(message="hi", user_id="b")))
        queued = await anext(second)
        assert queued.WhichOneof("event") == "queued" and queued.queued.position == 0
        gate.set()
        assert [e.WhichOneof("event") async for e in first][-1] == "done"
        kinds = [e.WhichOneof("event") async for e in second]
        assert kinds[-1] == "done"
        rows = await pg.sql("SELECT owner, state FROM sched_requests ORDER BY enqueued_at")
        assert [(r["owner"], r["state"]) for r in rows] == [
            ("one", "completed"),
            ("two", "completed"),
        ]


async def test_a_fenced_turn_ends_its_stream_with_an_error_and_is_not_stored_complete(
    pg: Backend,
) -> None:
    url = f"{pg.url}{'&' if '?' in pg.url else '?'}schema={pg.schema}"
    gate = threading.Event()
    async with FakeOllama() as fake, AsyncExitStack() as stack:
        fake.push(Reply(chunks=("partial ", "never"), gate=gate, gate_after=1))
        service = await stack.enter_async_context(running_service(settings_for(url, fake, "one")))
        channel = await stack.enter_async_context(
            grpc.aio.insecure_channel(f"127.0.0.1:{service.port}")
        )
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        events = aiter(stub.ChatStream(pb.ChatStreamRequest(message="hi", user_id="a")))
        while (await anext(events)).WhichOneof("event") != "text_delta":
            pass
        # What another replica's rescue does to a grant whose lease ran out.
        await pg.sql(
            "UPDATE sched_requests SET state = 'failed', closed = true, slot = NULL,"
            " error_kind = 'ServiceUnavailable', error_code = 'UNAVAILABLE',"
            " error_message = 'lease expired', finished_at = enqueued_at"
        )
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            async for _ in events:
                pass
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "lost its lease" in (ended.value.details() or "")
        gate.set()
        rows = await pg.sql("SELECT role, status FROM messages ORDER BY id")
        assert rows and {r["status"] for r in rows} == {"failed"}
        # Stored once: one question and one (partial, failed) answer, nothing twice.
        assert [r["role"] for r in rows] == ["user", "assistant"]
        (request,) = await pg.sql("SELECT state FROM sched_requests")
        assert request["state"] == "failed"  # the holder's finish did not clobber it


async def test_an_answer_that_runs_out_after_its_lease_was_taken_is_not_complete(
    pg: Backend,
) -> None:
    url = f"{pg.url}{'&' if '?' in pg.url else '?'}schema={pg.schema}"
    gate = threading.Event()
    async with FakeOllama() as fake, AsyncExitStack() as stack:
        fake.push(Reply(chunks=("partial ", "end"), gate=gate, gate_after=1))
        service = await stack.enter_async_context(running_service(settings_for(url, fake, "one")))
        channel = await stack.enter_async_context(
            grpc.aio.insecure_channel(f"127.0.0.1:{service.port}")
        )
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        events = aiter(stub.ChatStream(pb.ChatStreamRequest(message="hi", user_id="a")))
        while (await anext(events)).WhichOneof("event") != "text_delta":
            pass
        await pg.sql(
            "UPDATE sched_requests SET state = 'failed', closed = true, slot = NULL,"
            " error_kind = 'ServiceUnavailable', error_code = 'UNAVAILABLE',"
            " error_message = 'lease expired', finished_at = enqueued_at"
        )
        gate.set()  # the answer ends at once, likely before the replica notices the rescue
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            async for _ in events:
                pass
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        rows = await pg.sql("SELECT status FROM messages WHERE role = 'assistant'")
        assert [r["status"] for r in rows] == ["failed"]  # stored once, never as complete
