"""`make demo`'s markers do what the README's demo section says, through the real stack."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.stack import Stack, launch, provider_config, stream_events
from tests.fakes.demo import demo_reply
from tests.fakes.http import RecordedRequest
from tests.fakes.ollama import FakeOllama


@pytest.fixture(scope="module")
def demo_ollama() -> Iterator[FakeOllama]:
    with FakeOllama(models=None) as fake:
        fake.responder = lambda request: demo_reply(request, chunk_delay_s=0.0)
        yield fake


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, demo_ollama: FakeOllama) -> Iterator[Stack]:
    stack = launch(tmp_path_factory.mktemp("demo"), provider_config("ollama", demo_ollama, None))
    yield stack
    stack.stop()


def _body(message: str) -> dict[str, str]:
    return {"message": message, "user_id": f"demo-{uuid.uuid4().hex[:8]}"}


def test_no_marker_echoes(client: httpx.Client) -> None:
    reply = client.post("/api/chat", json=_body("hello there"))
    assert reply.status_code == 200 and reply.json()["response"] == "echo: hello there"


def test_tool_calls_the_calculator_on_the_messages_arithmetic(client: httpx.Client) -> None:
    events = stream_events(client, "/api/chat/stream", _body("what is 17 * 23? #tool"))
    names = [e.event for e in events]
    assert {"tool_call", "tool_result"} <= set(names) and names[-1] == "done"
    call = next(e.data for e in events if e.event == "tool_call")
    assert (call["name"], call["arguments"]) == ("calculator", {"expression": "17*23"})
    done = events[-1].data
    assert done["response"] == "The calculator says 391."
    assert done["tool_calls"][0]["result"] == "391"


def test_busy_is_the_providers_overload(client: httpx.Client) -> None:
    reply = client.post("/api/chat", json=_body("anyone there? #busy"))
    assert reply.status_code == 503, reply.text
    assert reply.json()["reason"] == "PROVIDER_OVERLOADED"
    assert int(reply.headers["retry-after"]) >= 1


def test_fail_ends_the_stream_with_one_error_event(client: httpx.Client) -> None:
    events = stream_events(client, "/api/chat/stream", _body("tell me #fail"))
    assert [e.event for e in events][-1] == "error"
    assert [e.event for e in events].count("error") == 1
    assert events[-1].data["code"] == "unavailable"


def _request(message: str) -> RecordedRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": message}]}
    return RecordedRequest("POST", "/api/chat", "", {}, body, b"", time.monotonic())


def test_slow_holds_a_slot_for_seconds_and_unreachable_breaks_off() -> None:
    slow = demo_reply(_request("count #slow"))
    assert slow.chunk_delay_s * len(slow.chunks) >= 10
    broken = demo_reply(_request("hello #unreachable"))
    assert broken.truncate_after == 0 and not broken.truncate_cleanly
