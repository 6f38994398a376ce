"""The gateway process: draining on SIGTERM, and /metrics summed over several workers."""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.queue_helpers import HANG, LiveStream, ReplyBook, chat_body, user, wait_until
from tests.e2e.stack import Stack, launch, provider_config
from tests.fakes.ollama import FakeOllama
from tests.fakes.script import Reply
from tests.gateway_http import gateway_client, gateway_get

GRACE_S = 3.0  # room for the checks made while draining; the test waits this long once


@pytest.fixture
def draining_stack(tmp_path: Path, fake_ollama: FakeOllama) -> Iterator[Stack]:
    config = provider_config("ollama", fake_ollama, None)
    config["ollama"]["parallel"] = 2
    config["api_server"] = {"shutdown_grace_s": GRACE_S, "log_level": "info"}
    stack = launch(tmp_path, config)
    yield stack
    stack.stop()


def test_sigterm_lets_short_streams_finish_and_ends_long_ones_with_an_error(
    draining_stack: Stack, book: ReplyBook
) -> None:
    stack = draining_stack
    gate = threading.Event()
    long_text = book.set(f"long {user()}", HANG)
    short_text = book.set(f"short {user()}", Reply(chunks=("one", " two"), gate=gate, gate_after=1))
    long = LiveStream(stack.url, chat_body(user(), long_text))
    short = LiveStream(stack.url, chat_body(user(), short_text))
    book.wait_received(long_text)
    short.wait_event("message")  # the first chunk is through; the rest waits for the gate

    assert stack.gateway is not None
    stack.gateway.signal(signal.SIGTERM)
    wait_until(lambda: "draining" in stack.gateway.log(), "the gateway to start draining")

    with gateway_client(stack.url, timeout=5) as client:
        refused = client.get("/api/status")
        ready = client.get("/health/ready")
        live = client.get("/health/live")
    assert refused.status_code == 503, refused.text
    assert refused.json()["code"] == "unavailable"
    assert int(refused.headers["retry-after"]) >= 1
    assert ready.status_code == 503
    assert live.status_code == 200

    gate.set()
    assert short.ended_with().event == "done"
    ended = long.ended_with()  # a clean end of the body, not a cut connection
    assert ended.event == "error", long
    assert ended.data["code"] == "unavailable"
    assert ended.data["retry_after_s"] > 0
    assert stack.gateway.wait(20) is not None  # and then the process exits


@pytest.fixture
def two_workers(tmp_path: Path, fake_ollama: FakeOllama) -> Iterator[Stack]:
    config = provider_config("ollama", fake_ollama, None)
    config["api_server"] = {"workers": 2}
    stack = launch(tmp_path, config)
    yield stack
    stack.stop()


def _metrics_dir(pid: int) -> Path:
    """The directory agent-gateway gave its workers (their environment, set before they started)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if not children.exists():
        pytest.skip("needs /proc to find the gateway's metrics directory")
    for child in children.read_text().split():
        for entry in Path(f"/proc/{child}/environ").read_bytes().split(b"\0"):
            if entry.startswith(b"PROMETHEUS_MULTIPROC_DIR="):
                return Path(entry.split(b"=", 1)[1].decode())
    raise AssertionError("agent-gateway's workers have no PROMETHEUS_MULTIPROC_DIR")


def _count(text: str) -> float:
    pattern = r'^agent_http_requests_total\{[^\n]*route="/health/live"[^\n]*\} (\S+)$'
    return sum(float(v) for v in re.findall(pattern, text, re.MULTILINE))


def test_metrics_add_up_every_worker(two_workers: Stack) -> None:
    stack = two_workers
    assert stack.gateway is not None and stack.gateway.popen is not None
    folder = _metrics_dir(stack.gateway.popen.pid)
    assert folder.parent == stack.workdir  # api_server.data_dir, not the temp folder
    sent = 0

    def workers_that_counted() -> set[str]:
        return {p.name for p in folder.glob("counter_*.db")}

    def both_counted() -> bool:
        nonlocal sent
        # A new connection each time, so either worker may accept it.
        assert gateway_get(f"{stack.url}/health/live", timeout=5).status_code == 200
        sent += 1
        return len(workers_that_counted()) >= 2

    wait_until(both_counted, "both workers to serve a request", timeout=30)
    for _ in range(4):  # each scrape reaches one worker or the other; each sees the sum
        text = gateway_get(f"{stack.url}/metrics", timeout=5).text
        assert _count(text) == sent
        assert "agent_active_streams 0.0" in text

    stack.stop()
    assert not folder.exists()  # the private directory goes with the gateway
