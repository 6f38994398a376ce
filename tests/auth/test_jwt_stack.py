"""JWTs through the real service in process: REST through the gateway and gRPC, one interceptor.

The service listens on a loopback port and fetches its keys from the fake
issuer's JWKS endpoint; the gateway runs in process on httpx's ASGI transport.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from agent.v1 import agent_pb2 as pb
from agent.v1 import agent_pb2_grpc

from gateway.app import create_app
from gateway.config import GatewaySettings
from service.config import Settings
from service.server import MAX_METADATA_BYTES, running_service
from tests.auth.cases import FAILURES, assert_not_echoed
from tests.auth.issuer import FakeIssuer, ec_key, rsa_key
from tests.fakes.ollama import FakeOllama
from tests.fakes.script import Reply
from tests.gateway_http import gateway_app_client

CLAIMS = {"tier_claim": "plan", "admin_claim": "roles", "admin_values": ["agent-admin"]}
TIERS = {"free": {"requests_per_minute": 1}, "pro": {"requests_per_minute": 0}}


@dataclass
class Stack:
    issuer: FakeIssuer
    fake: FakeOllama
    http: httpx.AsyncClient
    stub: Any  # agent_pb2_grpc.AgentServiceStub

    def bearer(self, sub: str, **claims: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.issuer.token(sub, **claims)}"}


def settings(tmp_path: Path, fake: FakeOllama, jwt: dict[str, Any]) -> Settings:
    return Settings(
        grpc={"address": "127.0.0.1:0", "shutdown_grace_s": 0.5},
        metrics={"address": "127.0.0.1:0"},
        store={"url": f"sqlite:///{tmp_path / 'agent.db'}"},
        api={"provider": "ollama"},
        ollama={"url": fake.url},
        auth={"jwt": jwt},
        limits={"tiers": TIERS},
    )


async def run_stack(
    tmp_path: Path, fake: FakeOllama, issuer: FakeIssuer, jwt: dict[str, Any]
) -> AsyncIterator[Stack]:
    async with running_service(settings(tmp_path, fake, jwt)) as service:
        app = create_app(GatewaySettings(grpc={"address": f"127.0.0.1:{service.port}"}))
        async with (
            app.router.lifespan_context(app),
            gateway_app_client(app, timeout=20) as http,
            grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel,
        ):
            yield Stack(issuer, fake, http, agent_pb2_grpc.AgentServiceStub(channel))


@pytest.fixture
async def issuer() -> AsyncIterator[FakeIssuer]:
    async with FakeIssuer([rsa_key("rsa-1"), ec_key("ec-1")]) as server:
        yield server


@pytest.fixture
async def stack(tmp_path: Path, fake: FakeOllama, issuer: FakeIssuer) -> AsyncIterator[Stack]:
    async for s in run_stack(tmp_path, fake, issuer, issuer.config(**CLAIMS)):
        yield s


async def test_a_valid_token_works_over_rest_and_grpc(stack: Stack) -> None:
    headers = stack.bearer("alice", key=stack.issuer.key("ec-1"))
    chat = await stack.http.post("/api/chat", json={"message": "hi"}, headers=headers)
    assert chat.status_code == 200, chat.text
    status = (await stack.http.get("/api/status", headers=headers)).json()
    assert (status["user_id"], status["identity_source"]) == ("alice", "jwt")
    assert (status["caller_admin"], status["user_limits"]["tier"]) == (False, "")
    # The user the token names, and no other.
    other = await stack.http.post(
        "/api/chat", json={"message": "hi", "user_id": "bob"}, headers=headers
    )
    assert other.status_code == 403 and other.json()["code"] == "permission_denied"

    metadata = (("authorization", headers["Authorization"]),)
    reply = await stack.stub.GetStatus(pb.GetStatusRequest(), metadata=metadata, timeout=10)
    assert (reply.user_id, reply.identity_source) == ("alice", "jwt")
    listed = await stack.stub.ListConversations(
        pb.ListConversationsRequest(), metadata=metadata, timeout=10
    )
    assert [c.conversation_id for c in listed.conversations] == [chat.json()["conversation_id"]]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stack.stub.GetStatus(
            pb.GetStatusRequest(user_id="bob"), metadata=metadata, timeout=10
        )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("case", list(FAILURES))
async def test_each_bad_token_is_a_401_with_the_bearer_challenge(stack: Stack, case: str) -> None:
    make_token, expected = FAILURES[case]
    token = make_token(stack.issuer)
    r = await stack.http.get("/api/status", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    body = r.json()
    assert body["code"] == "unauthenticated"
    assert expected in body["detail"], body
    assert_not_echoed(token, r.text)


@pytest.mark.parametrize("case", list(FAILURES))
async def test_each_bad_token_is_unauthenticated_over_grpc(stack: Stack, case: str) -> None:
    make_token, expected = FAILURES[case]
    token = make_token(stack.issuer)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.GetStatus(
            pb.GetStatusRequest(), metadata=(("authorization", f"Bearer {token}"),), timeout=10
        )
    # The 100 KB token too: the transport lets it through to the interceptor (its metadata
    # limit is MAX_METADATA_BYTES), where it is refused by its length before any parsing.
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, caught.value.details()
    details = caught.value.details() or ""
    assert expected in details, details
    assert_not_echoed(token, details)
    assert_not_echoed(token, repr(caught.value.trailing_metadata()))


async def test_metadata_past_the_transport_limit_is_refused_by_grpc(stack: Stack) -> None:
    """Past MAX_METADATA_BYTES gRPC itself answers, always and before the interceptor."""
    token = stack.issuer.token("alice", pad="x" * MAX_METADATA_BYTES)
    for _ in range(3):  # not a share of calls at random, as between a soft and a hard limit
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stack.stub.GetStatus(
                pb.GetStatusRequest(), metadata=(("authorization", f"Bearer {token}"),), timeout=10
            )
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "metadata size exceeds" in (caught.value.details() or "")
    # The connection survives it: the next call on the same channel works.
    reply = await stack.stub.GetStatus(
        pb.GetStatusRequest(),
        metadata=(("authorization", stack.bearer("alice")["Authorization"]),),
        timeout=10,
    )
    assert reply.user_id == "alice"


async def test_the_tier_claim_picks_the_limits(stack: Stack) -> None:
    free = stack.bearer("frank", plan="free")
    first = await stack.http.post("/api/chat", json={"message": "one"}, headers=free)
    assert first.status_code == 200, first.text
    second = await stack.http.post("/api/chat", json={"message": "two"}, headers=free)
    assert second.status_code == 429, second.text
    assert "requests_per_minute=1" in second.json()["detail"]
    status = (await stack.http.get("/api/status", headers=free)).json()
    assert status["user_limits"]["tier"] == "free"

    pro = stack.bearer("paula", plan="pro")
    for message in ("one", "two", "three"):
        r = await stack.http.post("/api/chat", json={"message": message}, headers=pro)
        assert r.status_code == 200, r.text
    assert (await stack.http.get("/api/status", headers=pro)).json()["user_limits"]["tier"] == "pro"


async def test_the_admin_claim_sees_every_users_requests(stack: Stack) -> None:
    gate = threading.Event()
    stack.fake.script.push(Reply.text("slow", " answer", gate=gate, gate_after=1))
    bob = stack.bearer("bob")
    running = asyncio.create_task(
        stack.http.post("/api/chat", json={"message": "hold on"}, headers=bob)
    )
    try:
        assert await stack.fake.wait_for_in_flight(1)
        admin = await stack.http.get(
            "/api/queue", headers=stack.bearer("root", roles=["agent-admin"])
        )
        assert admin.status_code == 200, admin.text
        assert admin.json()["all_users"] is True
        assert [r["user_id"] for r in admin.json()["requests"]] == ["bob"]
        alice = (await stack.http.get("/api/queue", headers=stack.bearer("alice"))).json()
        assert (alice["all_users"], alice["requests"]) == (False, [])
        root_status = await stack.http.get(
            "/api/status", headers=stack.bearer("root", roles=["agent-admin"])
        )
        assert root_status.json()["caller_admin"] is True
    finally:
        gate.set()
    assert (await running).status_code == 200


async def test_an_unreachable_issuer_at_start_warns_and_answers_503(
    tmp_path: Path, fake: FakeOllama, caplog: pytest.LogCaptureFixture
) -> None:
    issuer = FakeIssuer()
    issuer.down = True
    with issuer, caplog.at_level(logging.WARNING):
        async for s in run_stack(tmp_path, fake, issuer, issuer.config()):
            assert "could not be loaded" in caplog.text  # started all the same
            r = await s.http.get("/api/status", headers=s.bearer("alice"))
            assert r.status_code == 503, r.text
            assert "never loaded" in r.json()["detail"] and "retry-after" in r.headers
