"""Prompt-cache usage over REST, SSE, gRPC, GetStatus and /usage (fake Anthropic with a cache)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import httpx
from agent.v1 import agent_pb2 as pb
from agent.v1 import agent_pb2_grpc

from service.server import running_service
from tests.fakes.anthropic import FakeAnthropic
from tests.gateway.conftest import AUTH, TOKEN, _client, gateway_settings, service_settings

USER = "carol"
# ~1,500 tokens: a history over the fake's 1,024-token cacheable minimum.
LONG = "Tell me about caches. " + "word " * 1200


def done_event(stream: str) -> dict[str, Any]:
    """The data of the stream's one ``done`` event (blocks may carry an ``id:`` line too)."""
    found: list[dict[str, Any]] = []
    for block in stream.split("\n\n"):
        lines = block.splitlines()
        if "event: done" in lines:
            data = next(line for line in lines if line.startswith("data: "))
            found.append(json.loads(data.removeprefix("data: ")))
    (done,) = found
    return done


async def test_cache_figures_reach_every_interface(tmp_path: Path) -> None:
    async with FakeAnthropic() as fake:
        settings = service_settings(
            tmp_path,
            api={"provider": "anthropic"},
            anthropic={"api_key": "sk-test", "base_url": fake.url, "model": "claude-test"},
        )
        async with running_service(settings) as running:
            async for client in _client(gateway_settings(running.port)):
                await check_interfaces(client, running.port)


async def check_interfaces(client: httpx.AsyncClient, port: int) -> None:
    # REST: the first turn writes the prompt to the cache.
    first = await client.post("/api/chat", json={"message": LONG, "user_id": USER}, headers=AUTH)
    assert first.status_code == 200, first.text
    usage = first.json()["usage"]
    assert usage["cache_creation_input_tokens"] > 1000 and usage["cache_read_input_tokens"] == 0
    conversation = first.json()["conversation_id"]

    # SSE: the next turn of the conversation reads it back; `done` says so.
    body = {"message": "and more?", "user_id": USER, "conversation_id": conversation}
    streamed = await client.post("/api/chat/stream", json=body, headers=AUTH)
    assert streamed.status_code == 200
    done = done_event(streamed.text)
    assert done["usage"]["cache_read_input_tokens"] >= usage["cache_creation_input_tokens"]

    # gRPC: the same fields in ChatResponse.usage.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)  # type: ignore[no-untyped-call]
        reply = await stub.Chat(
            pb.ChatRequest(message="last one", user_id=USER, conversation_id=conversation),
            metadata=(("authorization", f"Bearer {TOKEN}"),),
        )
    assert reply.usage.cache_read_input_tokens >= done["usage"]["cache_read_input_tokens"]

    # GetStatus over REST: the user's totals are the sums of the three turns.
    turns = [usage, done["usage"], json_usage(reply.usage)]
    status = await client.get("/api/status", params={"user_id": USER}, headers=AUTH)
    totals = status.json()["user_usage"]
    for kind in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
        assert totals[kind] == sum(turn[kind] for turn in turns), kind
    assert totals["cache_read_input_tokens"] > 0

    # /usage: the same totals, in words.
    command = await client.post(
        "/api/chat", json={"message": "/usage", "user_id": USER}, headers=AUTH
    )
    text = command.json()["response"]
    assert f"{totals['cache_read_input_tokens']} read from the prompt cache" in text
    assert f"{totals['cache_creation_input_tokens']} written to it" in text


def json_usage(usage: pb.Usage) -> dict[str, int]:
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_creation_input_tokens": usage.cache_creation_input_tokens,
        "cache_read_input_tokens": usage.cache_read_input_tokens,
    }
