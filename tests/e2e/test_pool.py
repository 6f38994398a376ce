"""A pool of Ollama hosts behind one queue, over real sockets: several fake hosts, the real stack.

Requests are told apart by their message text; which host ran one is which
fake received it. Replies that hang keep a slot taken until their owner
cancels them, so every placement below is decided by the scheduler alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.queue_helpers import (
    HANG,
    LiveStream,
    ReplyBook,
    cancel,
    chat_body,
    conversation_messages,
    label,
    user,
    wait_until,
)
from tests.e2e.stack import Stack, launch
from tests.fakes.ollama import FakeOllama, last_user_text
from tests.fakes.script import Reply
from tests.gateway_http import gateway_client


def loaded(*fakes: FakeOllama) -> None:
    """Every host has the model loaded from the start, so that preference decides nothing."""
    for fake in fakes:
        fake.loaded = ["llama3.2:latest"]


def pool_stack(tmp: Path, hosts: list[dict[str, Any]], **ollama: Any) -> Stack:
    config = {
        "api": {"provider": "ollama"},
        "ollama": {
            "model": "llama3.2",
            "backends": hosts,
            "health_interval_s": 0.2,
            "unhealthy_after": 2,
            **ollama,
        },
    }
    return launch(tmp, config)


def host_of(text: str, *fakes: FakeOllama) -> FakeOllama:
    """The one fake that received the chat with this message."""
    found = [f for f in fakes if any(last_user_text(r.json) == text for r in f.chats)]
    assert len(found) == 1, f"{text!r} reached {len(found)} hosts"
    return found[0]


def hold(stack: Stack, book: ReplyBook, **fields: Any) -> LiveStream:
    """A running request that keeps its slot until cancelled."""
    text = book.set(label("hold"), HANG)
    stream = LiveStream(stack.url, chat_body(user("holder"), text, **fields))
    stream.wait_event("start")
    book.wait_received(text)
    return stream


def release(client: httpx.Client, stream: LiveStream) -> None:
    assert cancel(client, stream.request_id, stream.user_id).json()["cancelled"] is True
    assert stream.ended_with().data["code"] == "cancelled"


def pool_status(client: httpx.Client) -> list[dict[str, Any]]:
    """The Ollama hosts as /api/status shows them."""
    providers = client.get("/api/status").json()["queue_stats"]["providers"]
    hosts: list[dict[str, Any]] = next(p for p in providers if p["provider"] == "ollama")["hosts"]
    return hosts


def host_status(client: httpx.Client, url: str) -> dict[str, Any]:
    return next(h for h in pool_status(client) if h["url"] == url)


@pytest.fixture(scope="module")
def two() -> Iterator[tuple[FakeOllama, FakeOllama]]:
    with FakeOllama() as a, FakeOllama() as b:
        loaded(a, b)
        yield a, b


@pytest.fixture(scope="module")
def two_book(two: tuple[FakeOllama, FakeOllama]) -> ReplyBook:
    return ReplyBook(*two)


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, two: tuple[FakeOllama, FakeOllama], two_book: Any
) -> Iterator[Stack]:
    a, b = two
    stack = pool_stack(
        tmp_path_factory.mktemp("pool"),
        [{"url": a.url, "parallel": 1}, {"url": b.url, "parallel": 1}],
    )
    yield stack
    stack.stop()


def test_two_hosts_with_one_slot_each_run_two_requests_at_once(
    stack: Stack, two: tuple[FakeOllama, FakeOllama], two_book: ReplyBook, client: httpx.Client
) -> None:
    first, second = hold(stack, two_book), hold(stack, two_book)
    a, b = two
    assert a.in_flight == 1 and b.in_flight == 1
    assert {host_of(s.body["message"], a, b) for s in (first, second)} == {a, b}
    hosts = pool_status(client)
    assert [(h["url"], h["state"], h["slots"], h["running"]) for h in hosts] == [
        (a.url, "up", 1, 1),
        (b.url, "up", 1, 1),
    ]
    assert all(h["since"] and h["last_error"] == "" for h in hosts)
    release(client, first)
    release(client, second)


def test_a_conversation_goes_back_to_its_host_when_free_and_elsewhere_when_busy(
    stack: Stack, two: tuple[FakeOllama, FakeOllama], two_book: ReplyBook, client: httpx.Client
) -> None:
    a, b = two
    who = user("affine")
    # Host a busy, so the first turn runs on b.
    blocker = hold(stack, two_book)
    assert host_of(blocker.body["message"], a, b) is a
    turn1 = client.post("/api/chat", json=chat_body(who, label("t1"))).json()
    assert host_of(turn1["response"].removeprefix("echo: "), a, b) is b
    release(client, blocker)

    # Both free: the second turn goes back to b although a comes first in the pool.
    more = {"conversation_id": turn1["conversation_id"], "new_conversation": False}
    text2 = label("t2")
    assert client.post("/api/chat", json=chat_body(who, text2, **more)).status_code == 200
    assert host_of(text2, a, b) is b

    # b busy: the third turn runs on a at once instead of waiting for b.
    first_hold = hold(stack, two_book)  # a (first in the pool)
    on_b = hold(stack, two_book)  # b
    release(client, first_hold)
    text3 = label("t3")
    assert client.post("/api/chat", json=chat_body(who, text3, **more)).status_code == 200
    assert host_of(text3, a, b) is a
    release(client, on_b)


def test_a_killed_host_fails_over_and_gets_work_again_when_it_comes_back(
    tmp_path: Path,
) -> None:
    with FakeOllama() as a, FakeOllama() as b:
        loaded(a, b)
        book = ReplyBook(a, b)
        stack = pool_stack(tmp_path, [{"url": a.url, "parallel": 2}, {"url": b.url, "parallel": 1}])
        try:
            with gateway_client(stack.url, timeout=20) as client:
                run_failover(stack, book, client, a, b)
        finally:
            stack.stop()


def run_failover(
    stack: Stack, book: ReplyBook, client: httpx.Client, a: FakeOllama, b: FakeOllama
) -> None:
    # Put two requests on a: one streaming, one still waiting for its first byte.
    x, y = hold(stack, book), hold(stack, book)  # x on a, y on b (the less loaded)
    assert host_of(y.body["message"], a, b) is b
    release(client, x)
    streaming_text = book.set(label("streaming"), Reply(chunks=("partial ", "never"), hang_after=1))
    streaming = LiveStream(stack.url, chat_body(user("s"), streaming_text))
    streaming.wait_event("message")
    silent_text = book.set(label("silent"), HANG, on=a)
    book.set(silent_text, Reply(chunks=("from b",)), on=b)
    silent = LiveStream(stack.url, chat_body(user("r"), silent_text))
    book.wait_received(silent_text)
    assert host_of(streaming_text, a, b) is a and host_of(silent_text, a, b) is a
    release(client, y)  # b is free for what comes back

    a.stop()  # the host dies: every connection to it drops, new ones are refused

    ended = streaming.ended_with()
    assert ended.event == "error", streaming.events
    assert ended.data["code"] == "unavailable" and ended.data["retry_after_s"] >= 1
    conversation = streaming.wait_event("start").data["conversation_id"]
    stored = conversation_messages(client, conversation, streaming.user_id)
    assert [(m["role"], m["status"]) for m in stored] == [
        ("user", "failed"),
        ("assistant", "failed"),
    ]
    assert stored[1]["content"][0]["text"] == "partial "

    # The one that had sent nothing runs again on b (where the silent reply is an echo).
    assert silent.ended_with().event == "done", silent.events
    assert "".join(e.data["text"] for e in silent.events if e.event == "message") == "from b"
    assert any(last_user_text(r.json) == silent_text for r in b.chats)

    wait_until(lambda: host_status(client, a.url)["state"] == "down", "host a to be down")
    down = host_status(client, a.url)
    assert down["last_error"] and down["running"] == 0
    # The pool is still reachable through b: the service says so, not "degraded".
    status = client.get("/api/status").json()
    ollama = next(p for p in status["providers"] if p["name"] == "ollama")
    assert status["status"] == "ok" and ollama["reachable"] is True
    assert ollama["detail"] == "1 of 2 hosts up"
    later = [label("later") for _ in range(3)]
    for text in later:
        assert client.post("/api/chat", json=chat_body(user(), text)).status_code == 200
        assert any(last_user_text(r.json) == text for r in b.chats)

    a.start()  # back on the same port
    wait_until(lambda: host_status(client, a.url)["state"] == "up", "host a to be up again")
    # Both idle again, each with the model loaded: the first host of the pool gets it.
    back = label("back")
    assert client.post("/api/chat", json=chat_body(user(), back)).status_code == 200
    assert any(last_user_text(r.json) == back for r in a.chats)


def test_requests_land_on_the_host_that_serves_their_model(tmp_path: Path) -> None:
    with FakeOllama(models=["m1"]) as a, FakeOllama(models=["m2"]) as b:
        ReplyBook(a, b)
        stack = pool_stack(
            tmp_path,
            [{"url": a.url, "models": ["m1"]}, {"url": b.url, "models": ["m2"]}],
            model="m1",
        )
        try:
            with gateway_client(stack.url, timeout=20) as client:
                for model, host in [("m2", b), ("m1", a), ("m2", b), ("m1", a)]:
                    text = label(model)
                    r = client.post("/api/chat", json=chat_body(user(), text, model=model))
                    assert r.status_code == 200, r.text
                    assert host_of(text, a, b) is host
                r = client.post("/api/chat", json=chat_body(user(), label("m3"), model="m3"))
                assert r.status_code == 400, r.text
                assert r.json()["code"] == "invalid_argument"
                assert "'m3'" in r.json()["detail"]
                assert "served models: m1, m2" in r.json()["detail"]
                hosts = pool_status(client)
                assert [h["models"] for h in hosts] == [["m1"], ["m2"]]
                # Each host loaded its model when it ran it; the next probe sees that.
                wait_until(
                    lambda: (
                        [h["models_loaded"] for h in pool_status(client)]
                        == [["m1:latest"], ["m2:latest"]]
                    ),
                    "the probes to report the loaded models",
                )
        finally:
            stack.stop()
