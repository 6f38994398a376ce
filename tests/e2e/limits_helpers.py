"""Helpers of the limits and operator e2e tests: a users file, bearer calls, gRPC refusals."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import yaml
from agent.v1 import agent_pb2 as pb
from agent.v1 import agent_pb2_grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.e2e.queue_helpers import chat_body, label


@dataclass(frozen=True)
class Users:
    """Tokens of the users written to a users file (the file holds their digests)."""

    tokens: dict[str, str]

    @classmethod
    def write(cls, path: Path, entries: dict[str, dict[str, Any]]) -> Users:
        tokens = {name: secrets.token_urlsafe(16) for name in entries}
        data = {
            name: {"token": "sha256:" + hashlib.sha256(tokens[name].encode()).hexdigest(), **e}
            for name, e in entries.items()
        }
        path.write_text(yaml.safe_dump(data))
        return cls(tokens)

    def headers(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}"}

    def metadata(self, name: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.tokens[name]}"),)


def chat(client: httpx.Client, users: Users, name: str, text: str = "") -> httpx.Response:
    body = chat_body(name, text or label(name))
    return client.post("/api/chat", json=body, headers=users.headers(name))


def chat_stream(client: httpx.Client, users: Users, name: str) -> httpx.Response:
    """The stream endpoint, read whole (a refusal comes back before any event)."""
    body = chat_body(name, label(name))
    return client.post("/api/chat/stream", json=body, headers=users.headers(name))


def assert_refused_over_rest(client: httpx.Client, users: Users, name: str, limit: str) -> float:
    """Both chat endpoints answer 429 naming ``limit``; the Retry-After seconds."""
    retry_after = 0.0
    for reply in (chat(client, users, name), chat_stream(client, users, name)):
        assert reply.status_code == 429, reply.text
        body = reply.json()
        assert body["code"] == "resource_exhausted"
        assert limit in body["detail"], body
        retry_after = int(reply.headers["retry-after"])
        assert retry_after >= 1
        assert body["retry_after_s"] >= 1
    return retry_after


def grpc_stub(address: str) -> tuple[grpc.Channel, agent_pb2_grpc.AgentServiceStub]:
    channel = grpc.insecure_channel(address)
    return channel, agent_pb2_grpc.AgentServiceStub(channel)  # type: ignore[no-untyped-call]


def assert_refused_over_grpc(address: str, users: Users, name: str, limit: str) -> float:
    """Chat and ChatStream end RESOURCE_EXHAUSTED naming ``limit``; the RetryInfo seconds."""
    channel, stub = grpc_stub(address)
    delays = []
    with channel:
        request = pb.ChatRequest(message=label(name), new_conversation=True)
        stream_request = pb.ChatStreamRequest(message=label(name), new_conversation=True)
        calls = (
            lambda: stub.Chat(request, metadata=users.metadata(name), timeout=10),
            lambda: list(
                stub.ChatStream(stream_request, metadata=users.metadata(name), timeout=10)
            ),
        )
        for call in calls:
            try:
                call()
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
                assert limit in (exc.details() or ""), exc.details()
                delays.append(_retry_delay(exc))
            else:
                raise AssertionError(f"{name} was not refused over gRPC")
    assert all(d >= 1 for d in delays), delays
    return delays[0]


def _retry_delay(exc: grpc.RpcError) -> float:
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    assert status is not None, "no status details"
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    raise AssertionError("no RetryInfo in the status details")
