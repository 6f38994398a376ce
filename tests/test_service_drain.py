"""While the service drains (SIGTERM's path), grpc.health.v1 says NOT_SERVING, and a
running turn still finishes; the health goes NOT_SERVING before the turn is done."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import grpc
from agent.v1 import agent_pb2 as pb
from agent.v1 import agent_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.config import Settings
from service.server import SERVICE_NAME, running_service
from tests.fakes.ollama import FakeOllama
from tests.fakes.script import Reply


async def test_draining_reports_not_serving_and_lets_the_running_turn_finish(
    tmp_path: Path,
) -> None:
    gate = threading.Event()
    async with FakeOllama() as fake:
        fake.push(Reply(chunks=("first ", "last"), gate=gate, gate_after=1))
        settings = Settings(
            grpc={"address": "127.0.0.1:0", "shutdown_grace_s": 10},
            metrics={"address": ""},
            store={"url": f"sqlite:///{tmp_path / 'agent.db'}"},
            api={"provider": "ollama"},
            ollama={"url": fake.url},
        )
        lifespan = running_service(settings)
        service = await lifespan.__aenter__()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            chat = agent_pb2_grpc.AgentServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            check = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
            assert (await health.Check(check)).status == health_pb2.HealthCheckResponse.SERVING

            stream = chat.ChatStream(pb.ChatStreamRequest(message="hi", user_id="u"))
            events = aiter(stream)
            while (await anext(events)).WhichOneof("event") != "text_delta":
                pass  # the turn runs and has said something: it holds a slot

            stopping = asyncio.create_task(lifespan.__aexit__(None, None, None))
            async with asyncio.timeout(5):
                while (await health.Check(check)).status != (
                    health_pb2.HealthCheckResponse.NOT_SERVING
                ):
                    await asyncio.sleep(0.01)
            assert not stopping.done()  # still draining: the turn has not finished

            gate.set()
            kinds = [event.WhichOneof("event") async for event in events]
            assert kinds[-1] == "done"
        await stopping
