"""JWTs over the real stack: service and gateway as processes, the issuer in this one.

The in-process tests cover every check; this one shows the processes as
operators run them: the configuration from a file, the key set fetched over
a socket, REST through uvicorn and gRPC straight to the service, a key
rotated at the issuer taken without a restart, and a 100 KB token refused.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from agent.v1 import agent_pb2 as pb
from agent.v1 import agent_pb2_grpc

from tests.auth.issuer import FakeIssuer, ec_key, rsa_key
from tests.e2e.stack import Stack, launch
from tests.fakes.ollama import FakeOllama
from tests.gateway_http import gateway_client


@pytest.fixture(scope="module")
def issuer() -> Iterator[FakeIssuer]:
    with FakeIssuer([rsa_key("rsa-1")]) as server:
        yield server


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, issuer: FakeIssuer) -> Iterator[Stack]:
    with FakeOllama() as fake:
        config = {
            "api": {"provider": "ollama"},
            "ollama": {"url": fake.url},
            # Any unknown kid may re-fetch at once here, so a rotation shows without waiting.
            "auth": {"jwt": issuer.config(min_refresh_interval_s=0.001)},
        }
        s = launch(tmp_path_factory.mktemp("jwt"), config)
        yield s
        s.stop()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_rest_and_grpc_take_the_token(stack: Stack, issuer: FakeIssuer) -> None:
    token = issuer.token("alice")
    with gateway_client(stack.url, timeout=20) as http:
        chat = http.post("/api/chat", json={"message": "hi"}, headers=bearer(token))
        assert chat.status_code == 200, chat.text
        status = http.get("/api/status", headers=bearer(token)).json()
        assert (status["user_id"], status["identity_source"]) == ("alice", "jwt")
    with grpc.insecure_channel(stack.grpc_address) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)  # type: ignore[no-untyped-call]
        reply = stub.ListConversations(
            pb.ListConversationsRequest(), metadata=(("authorization", f"Bearer {token}"),)
        )
        assert [c.conversation_id for c in reply.conversations] == [chat.json()["conversation_id"]]


def test_a_rotated_key_works_without_a_restart(stack: Stack, issuer: FakeIssuer) -> None:
    new = ec_key("ec-2")
    issuer.keys = [new]  # the old key retired at the issuer
    with gateway_client(stack.url, timeout=20) as http:
        r = http.get("/api/status", headers=bearer(issuer.token("bob", key=new)))
        assert r.status_code == 200, r.text
        assert r.json()["user_id"] == "bob"


def test_a_100_kb_token_is_a_401(stack: Stack, issuer: FakeIssuer) -> None:
    token = issuer.token("alice", pad="x" * 100_000)
    with gateway_client(stack.url, timeout=20) as http:
        r = http.get("/api/status", headers=bearer(token))
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert "bytes long" in r.json()["detail"] and "xxxxxxxx" not in r.text
