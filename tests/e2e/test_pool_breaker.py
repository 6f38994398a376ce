"""A pool host that passes every health check but fails every chat, over real sockets.

The audit's case: one of two hosts answers HTTP 500 to every chat. Its chats
count toward its health (the circuit breaker takes it out), the requests it
failed before any output run on the other host, follow-up turns of a
conversation it served go elsewhere, and the status shows it out with why.
"""

from __future__ import annotations

from pathlib import Path

from tests.e2e.queue_helpers import ReplyBook, chat_body, label, user
from tests.e2e.test_pool import host_of, host_status, loaded, pool_stack
from tests.fakes.ollama import FakeOllama
from tests.fakes.script import Reply
from tests.gateway_http import gateway_client


def test_a_host_failing_every_chat_is_taken_out_and_its_requests_run_elsewhere(
    tmp_path: Path,
) -> None:
    with FakeOllama() as a, FakeOllama() as b:
        loaded(a, b)
        book = ReplyBook(a, b)
        stack = pool_stack(
            tmp_path,
            [{"url": a.url, "parallel": 1}, {"url": b.url, "parallel": 1}],
            breaker_failures=2,
            breaker_open_s=600,
        )
        try:
            with gateway_client(stack.url, timeout=20) as client:
                who = user("pinned")
                first = client.post("/api/chat", json=chat_body(who, label("t1"))).json()
                assert host_of(first["response"].removeprefix("echo: "), a, b) is a

                # From now on a's model runner is broken; its health checks still pass.
                a.responder = lambda _request: Reply.error(500, "model runner crashed")
                more = {"conversation_id": first["conversation_id"], "new_conversation": False}
                for _ in range(5):  # follow-ups of the conversation a served
                    r = client.post("/api/chat", json=chat_body(who, label("next"), **more))
                    assert r.status_code == 200, r.text
                answers = [
                    client.post("/api/chat", json=chat_body(user(), label("other")))
                    for _ in range(10)
                ]
                assert [r.status_code for r in answers] == [200] * 10
                assert len(a.chats) == 1 + 2  # the first turn, then two failures: out
                assert len(b.chats) == 15
                out = host_status(client, a.url)
                assert out["state"] == "down"
                assert "2 chat(s) failed in a row" in out["last_error"]
                assert "model runner crashed" in out["last_error"]
                assert book.received()[-1].startswith("other-")
        finally:
            stack.stop()
