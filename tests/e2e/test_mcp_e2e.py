"""MCP tools end to end: the real mcp-server-time from PyPI over stdio, on both providers."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime

import httpx
import pytest

from tests.e2e.conftest import ProviderStack
from tests.e2e.stack import ANTHROPIC_KEY, free_port, launch, provider_config, stream_events
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.ollama import FakeOllama
from tests.fakes.script import Reply
from tests.gateway_http import gateway_client


def mcp_servers() -> list[dict]:
    return [
        {
            "name": "time",
            "transport": "stdio",
            "command": sys.executable,
            "args": ["-m", "mcp_server_time", "--local-timezone", "UTC"],
            "allowed_tools": ["get_current_time"],
            "timeout_s": 5,
        },
        {
            # Nothing listens here: the service must start anyway and report it.
            "name": "offline",
            "transport": "http",
            "url": f"http://127.0.0.1:{free_port()}/mcp",
            "connect_timeout_s": 5,
        },
    ]


@pytest.fixture(scope="module", params=["ollama", "anthropic"])
def mcp_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProviderStack]:
    with FakeOllama() as ollama, FakeAnthropic(api_key=ANTHROPIC_KEY) as anthropic:
        config = provider_config(request.param, ollama, anthropic)
        config["tools"] = {"mcp_servers": mcp_servers(), "mcp_retry_initial_s": 0.2}
        stack = launch(tmp_path_factory.mktemp(f"mcp-{request.param}"), config)
        fake: FakeOllama | FakeAnthropic = ollama if request.param == "ollama" else anthropic
        try:
            yield ProviderStack(request.param, stack, fake)
        finally:
            stack.stop()


@pytest.fixture
def http(mcp_stack: ProviderStack) -> Iterator[httpx.Client]:
    with gateway_client(mcp_stack.stack.url, timeout=20) as c:
        yield c


def offered_names(provider: str, body: dict) -> list[str]:
    tools = body.get("tools", [])
    if provider == "anthropic":
        return [t["name"] for t in tools]
    return [t["function"]["name"] for t in tools]


def test_time_tool_from_the_real_server(mcp_stack: ProviderStack, http: httpx.Client) -> None:
    fake = mcp_stack.fake
    fake.push(
        Reply.tool("time__get_current_time", {"timezone": "Europe/Paris"}),
        Reply.text("It is evening ", "in Paris."),
    )
    who = f"m-{uuid.uuid4().hex[:8]}"
    events = stream_events(http, "/api/chat/stream", {"message": "time in Paris?", "user_id": who})
    names = [e.event for e in events]
    assert names == ["start", "tool_call", "tool_result", "message", "message", "done"], names
    call, result = events[1].data, events[2].data
    assert call["name"] == "time__get_current_time"
    assert call["arguments"] == {"timezone": "Europe/Paris"}
    assert result["id"] == call["id"] and result["is_error"] is False
    answer = json.loads(result["result"])  # the server's own answer, passed through
    assert answer["timezone"] == "Europe/Paris"
    assert datetime.fromisoformat(answer["datetime"]).utcoffset() is not None
    done = events[-1].data
    assert done["response"] == "It is evening in Paris."
    assert done["tool_calls"][0]["result"] == result["result"]

    first, second = fake.chats[-2].json, fake.chats[-1].json
    # allowed_tools: the model was offered get_current_time, never convert_time.
    assert offered_names(mcp_stack.name, first) == [
        "current_time",
        "calculator",
        "time__get_current_time",
    ]
    # The server's answer went back to the model.
    assert json.dumps(result["result"]) in json.dumps(second["messages"][-1])


def test_status_lists_every_mcp_server(mcp_stack: ProviderStack, http: httpx.Client) -> None:
    r = http.get("/api/status")
    assert r.status_code == 200, r.text
    servers = {s["name"]: s for s in r.json()["mcp_servers"]}
    assert list(servers) == ["time", "offline"]
    assert servers["time"] == {
        "name": "time",
        "transport": "stdio",
        "state": "ready",
        "tools": ["time__get_current_time"],
        "last_error": "",
        "restarts": 0,
    }
    offline = servers["offline"]
    assert offline["transport"] == "http" and offline["tools"] == []
    assert offline["state"] in ("unavailable", "connecting")
    assert "connect" in offline["last_error"].lower()
