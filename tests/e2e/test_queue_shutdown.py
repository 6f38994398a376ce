"""SIGTERM with requests running and waiting: the running ones finish, the waiting ones are
told the service is unavailable, and the process is gone within the grace period."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

from tests.e2e.queue_helpers import (
    LiveStream,
    ReplyBook,
    chat_body,
    label,
    queue_stack,
    start_queued,
    user,
)
from tests.fakes.ollama import FakeOllama
from tests.fakes.script import Reply

GRACE_S = 3.0
CHUNKS = tuple(f"w{i} " for i in range(8))


def test_sigterm_finishes_running_requests_and_turns_waiting_ones_away(tmp_path: Path) -> None:
    with FakeOllama() as fake:
        book = ReplyBook(fake)
        stack = queue_stack(
            tmp_path, fake, ollama={"parallel": 2}, grpc={"shutdown_grace_s": GRACE_S}
        )
        try:
            # The running answers stop after their first chunk until the gate opens, so they
            # hold both slots (the waiting ones cannot start) until the service has turned the
            # waiting ones away; only then do they finish, well inside the grace period.
            gate = threading.Event()
            running = []
            for _ in range(2):
                text = book.set(label("running"), Reply.text(*CHUNKS, gate=gate, gate_after=1))
                stream = LiveStream(stack.url, chat_body(user(), text))
                stream.wait_event("message")
                running.append(stream)
            waiting = [start_queued(stack, chat_body(user(), label("waiting"))) for _ in range(2)]

            assert stack.service is not None
            stack.service.signal(signal.SIGTERM)
            signalled_at = time.monotonic()

            for stream in waiting:
                end = stream.ended_with()
                assert end.event == "error", stream.events
                assert end.data["code"] == "unavailable"
                assert "shutting down" in end.data["message"]
            assert not any(s.terminal for s in running), running
            gate.set()
            for stream in running:
                end = stream.ended_with()
                assert end.event == "done", stream.events
                assert end.data["response"] == "".join(CHUNKS)
            try:
                stack.service.wait(GRACE_S)
            except subprocess.TimeoutExpired:
                raise AssertionError(
                    f"service still running after the grace period:\n{stack.logs()}"
                ) from None
            assert time.monotonic() - signalled_at < GRACE_S
        finally:
            stack.stop()
    received = book.received()
    assert all(s.body["message"] in received for s in running)
    assert not any(s.body["message"] in received for s in waiting)
    for stream in running:
        upstream = book.request_for(stream.body["message"])
        assert upstream is not None and upstream.finished_at is not None


def test_requests_still_running_after_the_grace_period_end_unavailable(tmp_path: Path) -> None:
    grace_s = 1.0
    with FakeOllama() as fake:
        book = ReplyBook(fake)
        stack = queue_stack(
            tmp_path, fake, ollama={"parallel": 1}, grpc={"shutdown_grace_s": grace_s}
        )
        try:
            # A gate nobody opens: the answer outlives any grace period.
            endless = Reply.text(*CHUNKS, gate=threading.Event(), gate_after=1)
            text = book.set(label("endless"), endless)
            stream = LiveStream(stack.url, chat_body(user(), text))
            stream.wait_event("message")
            assert stack.service is not None
            stack.service.signal(signal.SIGTERM)
            end = stream.ended_with()
            assert end.event == "error", stream.events
            assert end.data["code"] == "unavailable"
            assert "shut down" in end.data["message"]
            stack.service.wait(grace_s + 5)
        finally:
            stack.stop()
    upstream = book.request_for(stream.body["message"])
    assert upstream is not None and upstream.disconnected_at is not None
