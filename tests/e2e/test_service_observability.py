"""The service as an operator sees it, over real sockets: its /metrics, its log lines.

The counters move after a chat, the queue gauges show a queue while one
exists, the exposition passes ``promtool check metrics`` (when promtool is
installed: Debian's ``prometheus`` package, which .ci/run installs), and a
request id sent as ``x-request-id`` is on the service's log lines for that
call, which are JSON when ``logging.format`` is json.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from agent.v1 import agent_pb2 as pb
from agent.v1 import agent_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.queue_helpers import (
    ReplyBook,
    SlotHolder,
    chat_body,
    label,
    queue_stack,
    start_queued,
    user,
    wait_until,
)
from tests.e2e.stack import Stack
from tests.fakes.ollama import FakeOllama


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, fake_ollama: FakeOllama, book: ReplyBook
) -> Iterator[Stack]:
    stack = queue_stack(
        tmp_path_factory.mktemp("observability"),
        fake_ollama,
        ollama={"parallel": 1},
        logging={"format": "json"},
        api_server={"log_level": "info"},
    )
    yield stack
    stack.stop()


def scrape(stack: Stack) -> str:
    response = httpx.get(stack.metrics_url, timeout=10)  # not the gateway: the service
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample by (name, sorted labels)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


def test_counters_move_after_a_chat(stack: Stack, client: httpx.Client) -> None:
    before = scrape(stack)
    reply = client.post("/api/chat", json=chat_body(user("metrics"), label("count me")))
    assert reply.status_code == 200, reply.text
    after = scrape(stack)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("agent_grpc_server_handled_total", method="Chat", code="OK") == 1
    assert moved("agent_grpc_server_handling_seconds_count", method="Chat") == 1
    assert moved("agent_turn_duration_seconds_count", provider="ollama") == 1
    assert moved("agent_time_to_first_token_seconds_count", provider="ollama") == 1
    assert moved("agent_queue_wait_seconds_count", provider="ollama") == 1
    usage = reply.json()["usage"]
    assert (
        moved("agent_tokens_total", provider="ollama", model="llama3.2", direction="output")
        == usage["output_tokens"]
    )
    assert value(after, "agent_queue_slots", provider="ollama", backend=stack_host(stack)) == 1
    # Bounded labels: no user id and no request id anywhere in the exposition.
    assert reply.json()["request_id"] not in after and "metrics-" not in after


def stack_host(stack: Stack) -> str:
    return str(stack.config["ollama"]["url"])


def test_queue_gauges_show_a_queue_while_one_exists(
    stack: Stack, book: ReplyBook, client: httpx.Client
) -> None:
    holder = SlotHolder(stack, book, client)
    waiting = start_queued(stack, chat_body(user("waiter"), label("wait"), priority=3))
    text = scrape(stack)
    assert value(text, "agent_queue_running", provider="ollama") == 1
    assert value(text, "agent_queue_waiting", provider="ollama", priority="3") == 1
    assert value(text, "agent_queue_waiting", provider="ollama", priority="5") == 0
    holder.release()
    assert waiting.ended_with().event == "done"
    wait_until(
        lambda: value(scrape(stack), "agent_queue_waiting", provider="ollama", priority="3") == 0,
        "the queue to empty",
    )


def test_failed_calls_are_counted_by_their_code(stack: Stack, client: httpx.Client) -> None:
    name, labels = "agent_grpc_server_handled_total", {"method": "Chat", "code": "NOT_FOUND"}
    before = value(scrape(stack), name, **labels)
    body = chat_body(user("lost"), label("x"), conversation_id="c_nowhere", new_conversation=False)
    assert client.post("/api/chat", json=body).status_code == 404
    assert value(scrape(stack), name, **labels) == before + 1


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (Debian: prometheus)"
)
def test_promtool_accepts_the_exposition(
    stack: Stack, client: httpx.Client, tmp_path: Path
) -> None:
    client.post("/api/chat", json=chat_body(user("promtool"), label("lint me")))
    text = scrape(stack)
    checked = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_request_id_is_on_the_service_log_lines_of_its_call(stack: Stack) -> None:
    request_id = f"trace-{label('rid')}"
    with grpc.insecure_channel(stack.grpc_address) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        reply = stub.Chat(
            pb.ChatRequest(message=label("logged"), user_id=user("logger"), new_conversation=True),
            metadata=[("x-request-id", request_id)],
            timeout=30,
        )
    assert reply.response
    assert stack.service is not None

    def access_line() -> dict[str, object] | None:
        for line in stack.service.log().splitlines():
            if request_id in line and '"rpc"' in line:
                return json.loads(line)
        return None

    wait_until(lambda: access_line() is not None, "the access line of the call")
    record = access_line()
    assert record is not None
    assert record["logger"] == "service.access" and record["level"] == "info"
    assert record["rpc"] == "Chat" and record["code"] == "OK"
    assert isinstance(record["duration_ms"], float) and record["user"].startswith("logger-")  # type: ignore[union-attr]
    # Every JSON line of the log parses; none carries the message text at info level.
    for line in stack.service.log().splitlines():
        if line.startswith("{"):
            parsed = json.loads(line)
            assert "logged-" not in json.dumps(parsed)


def test_one_request_id_from_the_client_to_both_logs(stack: Stack, client: httpx.Client) -> None:
    request_id = f"edge-{label('rid')}"
    reply = client.post(
        "/api/chat",
        json={"message": label("tied"), "user_id": user("edge")},
        headers={"X-Request-ID": request_id},
    )
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-request-id"] == request_id
    assert reply.json()["request_id"] == request_id  # the turn ran under the same id
    assert stack.service is not None and stack.gateway is not None
    service, gateway = stack.service, stack.gateway

    def lines(log: str) -> list[dict[str, object]]:
        return [json.loads(line) for line in log.splitlines() if request_id in line]

    wait_until(lambda: lines(service.log()) and lines(gateway.log()), "both access lines")
    assert any(r.get("rpc") == "Chat" for r in lines(service.log()))
    assert all(r["request_id"] == request_id for r in lines(service.log()))
    assert all(r["request_id"] == request_id for r in lines(gateway.log()))
