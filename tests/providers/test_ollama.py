"""OllamaBridge specifics: its wire format, NDJSON framing, and what FakeOllama serves."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import httpx
import pytest

from service.content import Message, TextBlock, ToolResultBlock, ToolUseBlock, Usage
from service.errors import Code, ProviderError, Reason, UpstreamLost
from service.providers.accumulate import fold
from service.providers.base import CompletionRequest, ProviderEvent, Stop, ToolCall, ToolSpec
from service.providers.ollama import OllamaBridge
from tests.e2e.stack import free_port
from tests.fakes.ollama import FakeOllama
from tests.fakes.script import Reply, ScriptedToolCall
from tests.providers.conftest import OLLAMA_MODEL, RELAXED_S, ask, collect


@pytest.fixture
async def bridge(fake_ollama: FakeOllama) -> AsyncIterator[OllamaBridge]:
    bridge = OllamaBridge(
        url=fake_ollama.url, model=OLLAMA_MODEL, first_byte_timeout_s=2, idle_timeout_s=RELAXED_S
    )
    yield bridge
    await bridge.aclose()


async def test_request_body_is_ollamas_chat_format(
    fake_ollama: FakeOllama, bridge: OllamaBridge
) -> None:
    tool = ToolSpec("calc", "Evaluate arithmetic", {"type": "object", "properties": {}})
    request = CompletionRequest(
        messages=[
            Message("user", [TextBlock("what is 2+2?")]),
            Message(
                "assistant",
                [TextBlock("Let me compute."), ToolUseBlock("t1", "calc", {"e": "2+2"})],
            ),
            Message("user", [ToolResultBlock("t1", "boom", is_error=True)]),
        ],
        system="Be brief.",
        tools=[tool],
        max_tokens=64,
    )
    await collect(bridge, request)
    body = fake_ollama.chats[0].json
    assert body["stream"] is True
    assert body["model"] == OLLAMA_MODEL
    assert body["options"] == {"num_predict": 64}
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "calc",
                "description": "Evaluate arithmetic",
                "parameters": tool.parameters,
            },
        }
    ]
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "what is 2+2?"},
        {
            "role": "assistant",
            "content": "Let me compute.",
            "tool_calls": [{"function": {"name": "calc", "arguments": {"e": "2+2"}}}],
        },
        # The name comes from the matching tool_use when the result does not carry it.
        {"role": "tool", "content": "error: boom", "tool_name": "calc"},
    ]
    assert "tools" not in (await _body_without_tools(fake_ollama, bridge))


async def _body_without_tools(fake: FakeOllama, bridge: OllamaBridge) -> dict[str, object]:
    await collect(bridge, ask())
    return fake.chats[-1].json


async def test_tool_call_ids_are_kept_or_synthesized_unique(
    fake_ollama: FakeOllama, bridge: OllamaBridge
) -> None:
    fake_ollama.push(
        Reply(
            chunks=(),
            tool_calls=(
                ScriptedToolCall("a", {"x": 1}),
                ScriptedToolCall("a", {"x": 2}),
                ScriptedToolCall("b", {}, id="call_given"),
            ),
        )
    )
    calls = [e for e in await collect(bridge, ask()) if isinstance(e, ToolCall)]
    assert [c.arguments for c in calls] == [{"x": 1}, {"x": 2}, {}]
    assert calls[2].id == "call_given"
    assert calls[0].id.startswith("call_") and calls[1].id.startswith("call_")
    assert len({c.id for c in calls}) == 3


@pytest.mark.parametrize(
    ("done_reason", "tools", "expected"),
    [
        ("stop", False, "end_turn"),
        ("stop", True, "tool_use"),
        ("length", False, "max_tokens"),
        ("load", False, "other"),
    ],
)
async def test_done_reason_is_normalized(
    fake_ollama: FakeOllama, bridge: OllamaBridge, done_reason: str, tools: bool, expected: str
) -> None:
    calls = (ScriptedToolCall("t", {}),) if tools else ()
    fake_ollama.push(Reply(chunks=("x",), tool_calls=calls, stop_reason=done_reason))
    events = await collect(bridge, ask())
    assert events[-1] == Stop(expected)  # type: ignore[arg-type]


SPLITS = [
    {"lines_per_write": 3},
    {"lines_per_write": 100},
    {"split": 1},
    {"split": 7},
    {"split": [5, 1, 40, 2]},
    {"split": "random", "split_seed": 1},
    {"split": "random", "split_seed": 2},
]


@pytest.mark.parametrize("framing", SPLITS, ids=[str(s) for s in SPLITS])
async def test_ndjson_parses_the_same_however_the_bytes_arrive(
    fake_ollama: FakeOllama, bridge: OllamaBridge, framing: dict[str, object]
) -> None:
    script = {
        # Scripted: the same prompt twice would otherwise hit the slot's cache the second time.
        "input_tokens": 3,
        "chunks": ("Hé", "llo ", "wörld", " ✓"),
        "tool_calls": (ScriptedToolCall("t", {"k": "v"}, id="c1"),),
    }
    fake_ollama.push(Reply(**script), Reply(**script, **framing))  # type: ignore[arg-type]
    plain = await collect(bridge, ask())
    framed = await collect(bridge, ask())
    assert framed == plain
    assert fold(plain).text == "Héllo wörld ✓"


async def test_unreadable_line_is_an_invalid_response(bridge: OllamaBridge) -> None:
    async with FakeGarbage() as fake:
        garbled = OllamaBridge(url=fake.url, model=OLLAMA_MODEL, idle_timeout_s=RELAXED_S)
        try:
            with pytest.raises(ProviderError) as caught:
                await collect(garbled, ask())
        finally:
            await garbled.aclose()
    assert caught.value.code == Code.UNAVAILABLE
    assert caught.value.reason == Reason.PROVIDER_INVALID_RESPONSE
    assert "not a JSON line" in caught.value.message


class FakeGarbage(FakeOllama):
    """An Ollama whose chat answer is not NDJSON."""

    async def handle(self, exchange):  # type: ignore[no-untyped-def]
        exchange.start(200, "application/x-ndjson")
        await exchange.write(b"<html>proxy error</html>\n", last=True)


async def test_usage_comes_from_the_done_line(
    fake_ollama: FakeOllama, bridge: OllamaBridge
) -> None:
    fake_ollama.push(Reply.text("a", input_tokens=26, output_tokens=282))
    events: list[ProviderEvent] = await collect(bridge, ask())
    assert events[-2:] == [Usage(26, 282), Stop("end_turn")]


async def test_probe_reports_version_and_a_missing_model(fake_ollama: FakeOllama) -> None:
    bridge = OllamaBridge(url=fake_ollama.url, model="mistral")
    try:
        health = await bridge.probe()
    finally:
        await bridge.aclose()
    assert health.reachable
    assert health.version == fake_ollama.version
    assert health.model_available is False
    assert "ollama pull mistral" in health.detail


async def test_probe_of_a_hung_server_times_out(fake_ollama: FakeOllama) -> None:
    async with FakeSilent() as silent:
        bridge = OllamaBridge(url=silent.url, model=OLLAMA_MODEL, probe_timeout_s=0.2)
        try:
            health = await bridge.probe()
        finally:
            await bridge.aclose()
    assert not health.reachable
    assert "did not answer" in health.detail


class FakeSilent(FakeOllama):
    """An Ollama that accepts connections and never answers."""

    async def handle(self, exchange):  # type: ignore[no-untyped-def]
        await exchange.wait_gone()


# --- FakeOllama itself -----------------------------------------------------------


async def test_fake_serves_the_other_endpoints(fake_ollama: FakeOllama) -> None:
    # not the gateway: the fake provider
    async with httpx.AsyncClient(base_url=fake_ollama.url) as client:
        root = await client.get("/")
        assert root.text == "Ollama is running"
        assert (await client.get("/api/version")).json() == {"version": fake_ollama.version}
        tags = (await client.get("/api/tags")).json()
        assert [m["name"] for m in tags["models"]] == ["llama3.2:latest"]
        show = await client.post("/api/show", json={"model": "llama3.2"})
        assert "tools" in show.json()["capabilities"]
        missing = await client.post("/api/show", json={"model": "nope"})
        assert missing.status_code == 404
        assert missing.json() == {"error": "model 'nope' not found"}
        no_model = await client.post("/api/chat", json={"messages": []})
        assert no_model.json() == {"error": "model is required"}


async def test_fake_answers_without_streaming_when_asked(fake_ollama: FakeOllama) -> None:
    fake_ollama.push(Reply.text("a", "b", tool_calls=(ScriptedToolCall("t", {"q": 1}),)))
    # not the gateway: the fake provider
    async with httpx.AsyncClient(base_url=fake_ollama.url) as client:
        response = await client.post(
            "/api/chat", json={"model": "llama3.2", "messages": [], "stream": False}
        )
    body = response.json()
    assert body["done"] is True
    assert body["message"]["content"] == "ab"
    assert body["message"]["tool_calls"] == [{"function": {"name": "t", "arguments": {"q": 1}}}]


async def test_fake_streams_when_stream_is_omitted(fake_ollama: FakeOllama) -> None:
    # not the gateway: the fake provider
    async with httpx.AsyncClient(base_url=fake_ollama.url) as client:
        response = await client.post(
            "/api/chat", json={"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}
        )
    lines = response.text.splitlines()
    assert response.headers["content-type"] == "application/x-ndjson"
    assert len(lines) >= 2
    assert '"done": true' in lines[-1]
    assert all(line.strip() for line in lines)


def test_fake_works_from_sync_code_and_restarts_cleanly() -> None:
    with FakeOllama() as fake:
        # not the gateway: the fake provider
        response = httpx.post(
            f"{fake.url}/api/chat", json={"model": "llama3.2", "messages": [], "stream": False}
        )
        assert response.json()["message"]["content"] == "echo: "
        url = fake.url
    with pytest.raises(httpx.ConnectError):
        # not the gateway: the fake provider
        httpx.get(url)


async def test_inventory_lists_loaded_and_installed_models() -> None:
    with FakeOllama(models=["m1", "m2:7b"]) as fake:
        fake.loaded = ["m1:latest"]
        bridge = OllamaBridge(url=fake.url, model="m1")
        try:
            full = await bridge.inventory(installed=True)
            assert full.loaded == {"m1:latest"} and full.installed == {"m1:latest", "m2:7b"}
            assert (await bridge.inventory(installed=False)).installed is None
        finally:
            await bridge.aclose()


async def test_inventory_of_a_host_that_refuses_is_upstream_lost_refused() -> None:

    bridge = OllamaBridge(url=f"http://127.0.0.1:{free_port()}", model="m1")
    try:
        with pytest.raises(UpstreamLost) as caught:
            await bridge.inventory(installed=False)
        assert caught.value.refused
    finally:
        await bridge.aclose()


async def test_a_chat_is_never_sent_twice_when_a_reused_connection_drops() -> None:
    # A server that answers the first chat on a connection and drops the connection
    # after reading the second: that second chat reached Ollama, so sending it again
    # on a new connection would run the generation twice. It must fail instead.
    received: list[bytes] = []
    done = b'{"message":{"role":"assistant","content":"hi"},"done":true}\n'

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answered = False
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                received.append(await reader.readexactly(int(length[1]) if length else 0))
                if answered:
                    break
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(done), done))
                answered = True
        except asyncio.IncompleteReadError:
            pass
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    bridge = OllamaBridge(url=f"http://127.0.0.1:{port}", model="m1")
    try:
        assert fold(await collect(bridge, ask())).stop_reason == "end_turn"
        with pytest.raises(UpstreamLost):
            await collect(bridge, ask())
        assert len(received) == 2
    finally:
        await bridge.aclose()
        server.close()
        await server.wait_closed()


async def test_calls_past_the_connection_limit_wait_for_a_connection() -> None:
    with FakeOllama() as fake:
        fake.responder = lambda request: Reply.text("x", "y", chunk_delay_s=0.05)
        bridge = OllamaBridge(url=fake.url, model=OLLAMA_MODEL, max_connections=2)
        try:
            turns = await asyncio.gather(*(collect(bridge, ask(f"n{i}")) for i in range(5)))
        finally:
            await bridge.aclose()
        assert [fold(t).text for t in turns] == ["xy"] * 5
        assert fake.max_in_flight <= 2
        assert fake.connections_opened <= 2
