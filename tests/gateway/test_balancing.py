"""The gateway over several replicas: gRPC's round_robin skips one that says NOT_SERVING.

Two in-process gRPC servers stand for two service replicas, each with the
standard health service; the gateway app (its own channel, built from a
comma list in ``grpc.address``) answers ``/api/status`` from whichever replica
its balancer picks. A replica that drains sets its health to NOT_SERVING
(``service.server`` does so on SIGTERM): from then on it gets no new call,
and it gets calls again once it is SERVING.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import httpx
import pytest
from agent.v1 import agent_pb2 as pb
from agent.v1 import agent_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from gateway.app import create_app
from gateway.config import GatewaySettings
from gateway.upstream_target import HEALTH_SERVICE
from tests.gateway.conftest import AUTH
from tests.gateway_http import gateway_app_client


class NamedService(agent_pb2_grpc.AgentServiceServicer):
    """Answers GetStatus with its own name as the model, so a reply says who served it."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def GetStatus(
        self, request: pb.GetStatusRequest, context: object
    ) -> pb.GetStatusResponse:
        return pb.GetStatusResponse(
            status="ok", provider="ollama", model=self.name, identity_source="open"
        )


@dataclass
class Replica:
    name: str
    server: grpc.aio.Server = field(default_factory=grpc.aio.server)
    health: health.aio.HealthServicer = field(default_factory=health.aio.HealthServicer)
    port: int = 0

    async def start(self) -> None:
        agent_pb2_grpc.add_AgentServiceServicer_to_server(NamedService(self.name), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        await self.set(serving=True)
        await self.server.start()

    async def set(self, *, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse
        await self.health.set(HEALTH_SERVICE, status.SERVING if serving else status.NOT_SERVING)


@pytest.fixture
async def replicas() -> AsyncIterator[list[Replica]]:
    pair = [Replica("r0"), Replica("r1")]
    for replica in pair:
        await replica.start()
    yield pair
    for replica in pair:
        await replica.server.stop(None)


@pytest.fixture
async def client(replicas: list[Replica]) -> AsyncIterator[httpx.AsyncClient]:
    address = ",".join(f"127.0.0.1:{r.port}" for r in replicas)
    app = create_app(GatewaySettings(grpc={"address": address}))
    async with app.router.lifespan_context(app), gateway_app_client(app, headers=AUTH) as http:
        yield http


async def served_by(client: httpx.AsyncClient) -> str:
    reply = await client.get("/api/status")
    assert reply.status_code == 200, reply.text
    return str(reply.json()["model"])


async def until_only(client: httpx.AsyncClient, names: set[str], run: int = 20) -> None:
    """Call until ``run`` calls in a row were all served by ``names`` (health is pushed)."""
    async with asyncio.timeout(15):
        streak = 0
        while streak < run:
            streak = streak + 1 if await served_by(client) in names else 0


async def test_calls_spread_over_serving_replicas_and_skip_a_draining_one(
    replicas: list[Replica], client: httpx.AsyncClient
) -> None:
    seen: set[str] = set()
    async with asyncio.timeout(15):
        while seen != {"r0", "r1"}:
            seen.add(await served_by(client))

    await replicas[1].set(serving=False)
    await until_only(client, {"r0"})
    assert {await served_by(client) for _ in range(40)} == {"r0"}

    await replicas[1].set(serving=True)
    seen = set()
    async with asyncio.timeout(15):
        while "r1" not in seen:
            seen.add(await served_by(client))


async def test_with_every_replica_draining_a_call_fails_as_unavailable(
    replicas: list[Replica], client: httpx.AsyncClient
) -> None:
    for replica in replicas:
        await replica.set(serving=False)

    async def refused() -> bool:
        reply = await client.get("/api/status")
        return reply.status_code == 503

    async with asyncio.timeout(30):
        while not await refused():
            pass
    reply = await client.get("/api/status")
    assert reply.status_code == 503
    body = reply.json()
    assert body["code"] == "unavailable"
    assert body["detail"].startswith("the agent service is unreachable")
    assert reply.headers["Retry-After"] == "1"
