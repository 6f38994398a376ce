"""MCP servers as tools, through the agent loop and the real Ollama bridge to the fake model.

The servers are real: ``mcp_test_server.py`` run over stdio (it can be told
to exit mid-call or hang) and the same tools served over streamable HTTP by
uvicorn in this process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import uvicorn

from service.agent import AgentLoop, Transcript
from service.config import McpServerSection
from service.content import Message, TextBlock, ToolResultBlock
from service.events import ChatEvent, ToolReturned
from service.providers.base import CompletionRequest, TextDelta
from service.providers.ollama import OllamaBridge
from service.store import ConversationStore
from service.tools import ToolRegistry, default_registry
from service.tools.mcp_registry import McpTools
from tests.fakes.ollama import FakeOllama
from tests.fakes.script import Reply
from tests.ports import free_port
from tests.tools.mcp_test_server import build_server

SERVER_SCRIPT = str(Path(__file__).with_name("mcp_test_server.py"))


def stdio_server(name: str = "t", **options: object) -> McpServerSection:
    return McpServerSection(
        name=name, transport="stdio", command=sys.executable, args=[SERVER_SCRIPT], **options
    )


class HttpMcpServer:
    """The test tools over streamable HTTP, served by uvicorn in this event loop."""

    def __init__(self, port: int, *, json_response: bool = False) -> None:
        self.port = port
        self.headers: list[dict[str, str]] = []  # of every HTTP request received
        mcp_app = build_server().streamable_http_app(host="127.0.0.1", json_response=json_response)

        async def app(scope: dict, receive: object, send: object) -> None:
            if scope["type"] == "http":
                self.headers.append({k.decode(): v.decode() for k, v in scope["headers"]})
            await mcp_app(scope, receive, send)

        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"
        )
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    async def __aenter__(self) -> HttpMcpServer:
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.should_exit = True
        assert self._task is not None
        await self._task


@pytest.fixture
async def bridge(fake: FakeOllama) -> AsyncIterator[OllamaBridge]:
    b = OllamaBridge(url=fake.url, model="llama3.2", first_byte_timeout_s=5, idle_timeout_s=5)
    yield b
    await b.aclose()


@pytest.fixture
async def make_mcp() -> AsyncIterator[Callable[..., Awaitable[tuple[McpTools, ToolRegistry]]]]:
    started: list[McpTools] = []

    async def make(*servers: McpServerSection) -> tuple[McpTools, ToolRegistry]:
        registry = default_registry(timeout_s=10)
        mcp = McpTools(
            registry, servers, default_timeout_s=10, retry_initial_s=0.05, retry_max_s=0.5
        )
        started.append(mcp)
        await mcp.start()
        return mcp, registry

    yield make
    for mcp in started:
        await mcp.stop()


async def turn(
    bridge: OllamaBridge, tools: ToolRegistry, text: str = "go"
) -> tuple[list[ChatEvent], Transcript]:
    events: list[ChatEvent] = []
    transcript = Transcript("ollama", "llama3.2", "r")
    request = CompletionRequest(messages=[Message("user", [TextBlock(text)])], model="llama3.2")

    async def record(event: ChatEvent) -> None:
        events.append(event)

    await AgentLoop(tools, max_rounds=3).run(bridge, request, transcript, record)
    return events, transcript


def result_of(events: list[ChatEvent]) -> ToolReturned:
    returned = [e for e in events if isinstance(e, ToolReturned)]
    assert len(returned) == 1, events
    return returned[0]


def offered(fake: FakeOllama, index: int = -1) -> list[str]:
    return [t["function"]["name"] for t in fake.chats[index].json.get("tools", [])]


async def wait_for(predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Wait for a state of the service (a restart), never a fixed time."""
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_stdio_tool_answers_and_errors_become_results(
    fake: FakeOllama, bridge: OllamaBridge, make_mcp: Callable[..., Awaitable[tuple]]
) -> None:
    mcp, tools = await make_mcp(stdio_server(env={"MCP_TEST_VALUE": "42"}))
    assert mcp.status()[0].state == "ready"

    fake.push(Reply.tool("t__getenv", {"name": "MCP_TEST_VALUE"}), Reply.text("ok"))
    assert result_of((await turn(bridge, tools))[0]).result == "42"  # the configured env

    fake.push(Reply.tool("t__echo", {"text": "hi"}), Reply.text("Echoed."))
    events, transcript = await turn(bridge, tools)
    result = result_of(events)
    assert not result.is_error and result.result.startswith("echo from ")
    assert result.result.endswith(": hi")
    assert transcript.text == "Echoed."
    # The tool result went back to the model.
    assert fake.chats[-1].json["messages"][-1]["content"] == result.result

    fake.push(Reply.tool("t__fail", {"reason": "no"}), Reply.text("It refused."))
    events, transcript = await turn(bridge, tools)
    result = result_of(events)
    assert result.is_error and "refused: no" in result.result
    assert transcript.text == "It refused."


async def test_non_text_content_is_described(
    fake: FakeOllama, bridge: OllamaBridge, make_mcp: Callable[..., Awaitable[tuple]]
) -> None:
    _mcp, tools = await make_mcp(stdio_server())
    fake.push(Reply.tool("t__picture", {}), Reply.text("A pixel."))
    events, _ = await turn(bridge, tools)
    result = result_of(events)
    assert not result.is_error
    assert result.result.splitlines() == [
        "a single pixel",
        "[image content: image/png, 70 bytes, not shown]",
    ]


async def test_server_crash_mid_turn_gives_an_error_result_and_it_is_restarted(
    fake: FakeOllama, bridge: OllamaBridge, make_mcp: Callable[..., Awaitable[tuple]]
) -> None:
    mcp, tools = await make_mcp(stdio_server())
    fake.push(Reply.tool("t__echo", {"text": "a"}), Reply.text("ok"))
    first_pid = result_of((await turn(bridge, tools))[0]).result.split()[2].rstrip(":")

    fake.push(Reply.tool("t__crash", {}), Reply.text("The tool broke."))
    events, transcript = await turn(bridge, tools)
    result = result_of(events)
    assert result.is_error and "closed the connection" in result.result
    assert transcript.text == "The tool broke." and transcript.stop_reason == "end_turn"

    await wait_for(lambda: mcp.status()[0].restarts == 1 and mcp.status()[0].state == "ready")
    assert "exited" in mcp.status()[0].last_error
    fake.push(Reply.tool("t__echo", {"text": "b"}), Reply.text("Back."))
    events, transcript = await turn(bridge, tools)
    result = result_of(events)
    assert not result.is_error and result.result.endswith(": b")
    assert result.result.split()[2].rstrip(":") != first_pid  # a new process
    assert transcript.text == "Back."


async def test_tool_hanging_past_timeout_gives_an_error_result(
    fake: FakeOllama, bridge: OllamaBridge, make_mcp: Callable[..., Awaitable[tuple]]
) -> None:
    _mcp, tools = await make_mcp(stdio_server(timeout_s=2))
    fake.push(Reply.tool("t__hang", {}), Reply.text("It took too long."))
    events, transcript = await turn(bridge, tools)
    result = result_of(events)
    assert result.is_error and result.result == "Tool 't__hang' timed out after 2 s."
    assert transcript.text == "It took too long."

    # The server itself is fine: the next call answers.
    fake.push(Reply.tool("t__echo", {"text": "c"}), Reply.text("ok"))
    assert not result_of((await turn(bridge, tools))[0]).is_error


async def test_allowed_tools_hides_the_others(
    fake: FakeOllama, bridge: OllamaBridge, make_mcp: Callable[..., Awaitable[tuple]]
) -> None:
    mcp, tools = await make_mcp(stdio_server(allowed_tools=["echo", "picture"]))
    assert mcp.status()[0].tools == ("t__echo", "t__picture")
    assert "t__getenv" not in tools and "t__crash" not in tools
    fake.push(Reply.tool("t__crash", {}), Reply.text("Not allowed."))
    events, _ = await turn(bridge, tools)
    # The model saw only the allowed names (besides the built-ins).
    assert offered(fake, 0) == ["current_time", "calculator", "t__echo", "t__picture"]
    result = result_of(events)
    assert result.is_error and result.result.startswith("Unknown tool 't__crash'")


async def test_streamable_http_server(
    fake: FakeOllama, bridge: OllamaBridge, make_mcp: Callable[..., Awaitable[tuple]]
) -> None:
    async with HttpMcpServer(free_port()) as server:
        mcp, tools = await make_mcp(
            McpServerSection(name="web", transport="http", url=server.url, headers={"x-a": "1"})
        )
        assert server.headers and all(h.get("x-a") == "1" for h in server.headers)
        status = mcp.status()[0]
        assert status.state == "ready" and status.transport == "http"
        assert "web__echo" in status.tools
        fake.push(Reply.tool("web__echo", {"text": "over http"}), Reply.text("Done."))
        events, transcript = await turn(bridge, tools)
        result = result_of(events)
        assert not result.is_error and result.result.endswith(": over http")
        assert str(os.getpid()) in result.result  # served by this process
        assert transcript.text == "Done."
        assert "web__echo" in offered(fake)


async def test_unreachable_server_is_retried_until_it_answers(
    fake: FakeOllama, bridge: OllamaBridge, make_mcp: Callable[..., Awaitable[tuple]]
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    mcp, tools = await make_mcp(McpServerSection(name="late", transport="http", url=url))
    status = mcp.status()[0]
    assert status.state in ("unavailable", "connecting") and status.tools == ()
    assert status.last_error  # why it is not there

    # Meanwhile turns go on without its tools.
    fake.push(Reply.text("No tools yet."))
    _, transcript = await turn(bridge, tools)
    assert transcript.text == "No tools yet." and "late__echo" not in offered(fake)

    async with HttpMcpServer(port):
        await wait_for(lambda: mcp.status()[0].state == "ready")
        fake.push(Reply.tool("late__echo", {"text": "finally"}), Reply.text("ok"))
        result = result_of((await turn(bridge, tools))[0])
        assert not result.is_error and result.result.endswith(": finally")


async def test_stop_ends_the_stdio_server(
    fake: FakeOllama, bridge: OllamaBridge, make_mcp: Callable[..., Awaitable[tuple]]
) -> None:
    mcp, tools = await make_mcp(stdio_server())
    fake.push(Reply.tool("t__echo", {"text": "pid"}), Reply.text("ok"))
    pid = int(result_of((await turn(bridge, tools))[0]).result.split()[2].rstrip(":"))
    os.kill(pid, 0)  # running
    await mcp.stop()
    assert mcp.status()[0].state == "stopped"
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)

    # A call after the stop is an error result, not an exception.
    fake.push(Reply.tool("t__echo", {"text": "late"}), Reply.text("gone"))
    events, _ = await turn(bridge, tools)
    assert result_of(events).is_error
    assert not [e for e in events if isinstance(e, TextDelta) and "Traceback" in e.text]


async def test_an_oversized_result_ends_the_call_with_an_error_and_the_server_stays(
    fake: FakeOllama, bridge: OllamaBridge, make_mcp: Callable[..., Awaitable[tuple]]
) -> None:
    # The answer holds the text twice (as content and as structured content).
    mcp, tools = await make_mcp(stdio_server(max_message_bytes=200_000))
    fake.push(Reply.tool("t__big", {"size": 60_000}), Reply.text("ok"))  # under the limit
    assert result_of((await turn(bridge, tools))[0]).result == "x" * 50_000 + (
        "\n[... 10000 more characters not shown]"
    )

    fake.push(Reply.tool("t__big", {"size": 20_000_000}), Reply.text("Too big."))
    events, transcript = await turn(bridge, tools)
    result = result_of(events)
    assert result.is_error and "max_message_bytes=200000" in result.result
    assert len(result.result) < 1000 and transcript.text == "Too big."

    fake.push(Reply.tool("t__echo", {"text": "still here"}), Reply.text("ok"))
    assert result_of((await turn(bridge, tools))[0]).result.endswith(": still here")
    assert mcp.status()[0].restarts == 0  # the same connection went on


async def test_a_long_error_text_is_cut_like_a_result(
    fake: FakeOllama,
    bridge: OllamaBridge,
    make_mcp: Callable[..., Awaitable[tuple]],
    store: ConversationStore,
) -> None:
    _mcp, tools = await make_mcp(stdio_server())
    fake.push(Reply.tool("t__huge_error", {"size": 1_000_000}), Reply.text("It failed."))
    events, transcript = await turn(bridge, tools)
    result = result_of(events)
    assert result.is_error and result.result.endswith(" more characters not shown]")
    assert len(result.result) < 50_100
    # What went back to the model is the cut text, not the megabyte.
    assert len(fake.chats[-1].json["messages"][-1]["content"]) < 50_100
    # And so is what the turn stores (the rows ChatService writes when the turn ends).
    await store.append_messages("u", "c1", transcript.to_store("complete"), create=True)
    stored = [
        block
        for message in await store.messages("u", "c1")
        for block in message.content
        if isinstance(block, ToolResultBlock)
    ]
    assert len(stored) == 1 and stored[0].is_error
    assert stored[0].content.endswith(" more characters not shown]")
    assert len(stored[0].content) < 50_100


async def test_stderr_is_logged_line_limited_and_rate_limited(
    fake: FakeOllama,
    bridge: OllamaBridge,
    make_mcp: Callable[..., Awaitable[tuple]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    mcp, tools = await make_mcp(stdio_server())
    with caplog.at_level(logging.INFO, logger="service.tools.mcp_stdio"):
        fake.push(Reply.tool("t__shout", {"lines": 2000, "width": 5000}), Reply.text("ok"))
        assert result_of((await turn(bridge, tools))[0]).result == "shouted"
        await mcp.stop()  # the stream ends: the count of lines left out is logged
    said = [r.getMessage() for r in caplog.records if r.name == "service.tools.mcp_stdio"]
    shouted = [s for s in said if "stderr: line " in s]
    assert shouted[0].startswith("MCP server 't' stderr: line 0 ssss")
    assert 1 <= len(shouted) <= 120  # the rate: 120 lines a minute
    assert all(len(s) < 1200 for s in said)  # each cut to 1000 characters
    assert any("line(s) not logged" in s for s in said)


@pytest.mark.parametrize("json_response", [False, True], ids=["sse", "json"])
async def test_an_oversized_http_answer_ends_the_call_with_an_error(
    fake: FakeOllama,
    bridge: OllamaBridge,
    make_mcp: Callable[..., Awaitable[tuple]],
    json_response: bool,
) -> None:
    async with HttpMcpServer(free_port(), json_response=json_response) as server:
        _mcp, tools = await make_mcp(
            McpServerSection(
                name="web", transport="http", url=server.url, max_message_bytes=200_000
            )
        )
        fake.push(Reply.tool("web__big", {"size": 5_000_000}), Reply.text("Too big."))
        events, transcript = await turn(bridge, tools)
        result = result_of(events)
        assert result.is_error and "200000" in result.result, result.result
        assert len(result.result) < 1000 and transcript.text == "Too big."
        fake.push(Reply.tool("web__echo", {"text": "still here"}), Reply.text("ok"))
        assert result_of((await turn(bridge, tools))[0]).result.endswith(": still here")
