"""A Python client generated from the served /openapi.json works against the real gateway.

openapi-python-client (a mainstream generator) builds the client in a temp
folder from the document the running gateway serves; the test then uses it
over a real socket for a chat turn, a streamed turn with a tool call, and the
status. A field the gateway sends but the document lacks would land in the
generated models' ``additional_properties``, so those must stay empty.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from tests.e2e.stack import Stack
from tests.fakes.ollama import FakeOllama
from tests.fakes.script import Reply
from tests.gateway_http import gateway_get
from tests.openapi_check import sse_frames

PACKAGE = "agent_api_client"


@pytest.fixture(scope="module")
def generated(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    folder = tmp_path_factory.mktemp("generated-client")
    document = folder / "openapi.json"
    document.write_bytes(gateway_get(f"{stack.url}/openapi.json", timeout=10).content)
    config = folder / "config.yaml"
    config.write_text("post_hooks: []\n")  # no formatter runs: the code is used, not read
    subprocess.run(
        [
            sys.executable,
            "-m",
            "openapi_python_client",
            "generate",
            "--path",
            str(document),
            "--config",
            str(config),
            "--meta",
            "none",
            "--output-path",
            str(folder / PACKAGE),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(folder))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def _module(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.{name}")


@pytest.fixture
def api(generated: ModuleType, stack: Stack) -> Iterator[Any]:
    """The generated client (closed after the test: its httpx client holds a connection)."""
    # The stack runs in open mode: any bearer token is accepted.
    with generated.AuthenticatedClient(base_url=stack.url, token="any", timeout=20.0) as client:
        yield client


def _no_unknown_fields(model: Any, where: str = "") -> None:
    """Recursively: every field the gateway sent is one the document declares."""
    extra = getattr(model, "additional_properties", None)
    if extra is None:
        return
    known_maps = ("waiting_by_priority", "arguments")  # maps by design
    if not any(where.endswith(name) for name in known_maps):
        assert extra == {}, f"{where or type(model).__name__}: undocumented {sorted(extra)}"
    for field in type(model).__attrs_attrs__:  # the generated models are attrs classes
        value = getattr(model, field.name)
        for item in value if isinstance(value, list) else [value]:
            _no_unknown_fields(item, f"{where}.{field.name}")


def user() -> str:
    return f"gen-{uuid.uuid4().hex[:8]}"


def test_the_generated_client_chats(api: Any) -> None:
    chat = _module("api.chat.chat")
    models = _module("models")
    answer = chat.sync(client=api, body=models.ChatRequest(message="hi", user_id=user()))
    assert isinstance(answer, models.ChatResponse), answer
    assert answer.response == "echo: hi" and answer.provider == "ollama"
    _no_unknown_fields(answer)


def test_the_generated_client_streams_with_the_event_models(
    api: Any, fake_ollama: FakeOllama
) -> None:
    fake_ollama.push(Reply.tool("calculator", {"expression": "17*23"}), Reply.text("391"))
    chat_stream = _module("api.chat.chat_stream")
    models = _module("models")
    response = chat_stream.sync_detailed(
        client=api,
        body=models.ChatRequest(message="what is 17*23?", user_id=user(), priority=2),
    )
    assert response.status_code == 200
    data_model = {
        "queued": models.QueuedEvent,
        "start": models.StartEvent,
        "message": models.MessageEvent,
        "tool_call": models.ToolCallEvent,
        "tool_result": models.ToolResultEvent,
        "done": models.ChatResponse,
        "error": models.ErrorEvent,
    }
    frames = sse_frames(response.content.decode())
    events = [
        (
            int(f["id"]),
            f["event"],
            data_model[f["event"]].from_dict(json.loads(f["data"])),
        )
        for f in frames
    ]
    assert [seq for seq, _, _ in events] == list(range(1, len(events) + 1))
    names = [name for _, name, _ in events]
    assert names[0] == "start" and names[-1] == "done"
    assert {"tool_call", "tool_result", "message"} <= set(names)
    tool_result = next(data for _, name, data in events if name == "tool_result")
    assert tool_result.result == "391" and tool_result.is_error is False
    done = events[-1][2]
    assert done.response == "391" and done.tool_calls[0].name == "calculator"
    for _, name, data in events:
        _no_unknown_fields(data, name)


def test_the_generated_client_reads_the_whole_status(api: Any) -> None:
    get_status = _module("api.status.get_status")
    models = _module("models")
    status = get_status.sync(client=api, user_id=user())
    assert isinstance(status, models.StatusResponse), status
    assert status.provider == "ollama"
    assert isinstance(status.user_limits, models.UserLimitsBody)
    assert isinstance(status.user_budget, models.TokenBudgetBody)
    assert isinstance(status.mcp_servers, list) and status.caller_admin in (True, False)
    [queue] = [p for p in status.queue_stats.providers if p.provider == "ollama"]
    assert queue.hosts and queue.hosts[0].url
    _no_unknown_fields(status)
