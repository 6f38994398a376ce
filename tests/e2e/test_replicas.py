"""Three service replicas sharing one queue in PostgreSQL, behind one balancing gateway.

Two fake Ollama hosts of one slot each; every replica has the same
configuration. Needs ``AGENT_TEST_POSTGRES_URL`` (CI sets it); each stack
lives in a schema of its own.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from agent.v1 import agent_pb2 as pb

from tests.e2e.queue_helpers import (
    HANG,
    LiveStream,
    ReplyBook,
    chat_body,
    label,
    user,
    wait_until,
)
from tests.e2e.replicas import LEASE_S, POSTGRES_URL, Replicas, replicas_config
from tests.fakes.ollama import FakeOllama
from tests.fakes.script import Reply
from tests.gateway_http import gateway_get, gateway_post

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not POSTGRES_URL, reason="AGENT_TEST_POSTGRES_URL is not set"),
    pytest.mark.timeout(120),
]


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory, fake_ollama: FakeOllama, fake_ollama_b: FakeOllama
) -> Iterator[Replicas]:
    config = replicas_config(fake_ollama, fake_ollama_b)
    stack = Replicas(tmp_path_factory.mktemp("replicas"), config)
    try:
        stack.start()
    except Exception:
        stack.stop()
        raise
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def book(fake_ollama: FakeOllama, fake_ollama_b: FakeOllama) -> ReplyBook:
    return ReplyBook(fake_ollama, fake_ollama_b, chunk_delay_s=0.02)


def _chat(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = gateway_post(f"{url}/api/chat", json=body, timeout=60)
    return response.status_code, response.json()


def test_forty_turns_from_ten_users_finish_once_on_both_hosts_and_on_every_replica(
    replicas: Replicas, book: ReplyBook, fake_ollama: FakeOllama, fake_ollama_b: FakeOllama
) -> None:
    for fake in (fake_ollama, fake_ollama_b):
        fake.reset_records()
    before = [r.turns_run() for r in replicas.replicas]
    bodies = [chat_body(f"user{i % 10}", label(f"t{i}")) for i in range(40)]
    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(lambda b: _chat(replicas.url, b), bodies))
    assert [code for code, _ in answers] == [200] * 40, answers[:3]
    assert sorted(a["request_id"] for _, a in answers) == sorted(b["request_id"] for b in bodies)
    received = book.received()
    assert sorted(received) == sorted(b["message"] for b in bodies)  # each ran once
    assert fake_ollama.max_in_flight <= 1 and fake_ollama_b.max_in_flight <= 1
    assert fake_ollama.chats and fake_ollama_b.chats  # both hosts worked
    ran = [after - was for after, was in zip([r.turns_run() for r in replicas.replicas], before)]
    assert all(n > 0 for n in ran), ran  # every replica ran some
    assert sum(ran) == 40


Held = list[tuple[threading.Thread, str, str]]  # (its client, request id, user)


def _hold(replicas: Replicas, book: ReplyBook, count: int) -> Held:
    """Requests that hold slots until the test cancels them (``_release``)."""
    held: Held = []
    for i in range(count):
        text = book.set(label(f"hold{i}"), HANG)
        body = chat_body(user(f"holder{i}"), text, on_disconnect="continue")
        thread = threading.Thread(target=_chat, args=(replicas.url, body), daemon=True)
        thread.start()
        held.append((thread, body["request_id"], body["user_id"]))
        book.wait_received(text)
    return held


def _release(replicas: Replicas, held: Held) -> None:
    for _, request_id, who in held:
        _cancel(replicas, request_id, who)
    for thread, _, _ in held:
        thread.join(30)


def _cancel(replicas: Replicas, request_id: str, who: str) -> pb.CancelRequestResponse:
    replica = next(r for r in replicas.replicas if r.process is not None and r.process.alive())
    with replica.channel() as channel:
        return replica.stub(channel).CancelRequest(
            pb.CancelRequestRequest(request_id=request_id, user_id=who), timeout=10
        )


def _submit_queued(replica_index: int, replicas: Replicas, message: str, user_id: str) -> str:
    """A continue-policy stream opened on one replica; returns its request id once queued."""
    request_id = f"q-{label('r')}"
    replica = replicas.replicas[replica_index]
    channel = replica.channel()
    stub = replica.stub(channel)
    call = stub.ChatStream(
        pb.ChatStreamRequest(
            message=message,
            user_id=user_id,
            new_conversation=True,
            request_id=request_id,
            on_disconnect=pb.DISCONNECT_POLICY_CONTINUE,
        ),
        timeout=60,
    )
    first = next(iter(call))
    assert first.WhichOneof("event") == "queued", first
    call.cancel()
    channel.close()
    return request_id


def _status(
    replicas: Replicas, index: int, request_id: str, user_id: str
) -> pb.GetQueueStatusResponse:
    replica = replicas.replicas[index]
    with replica.channel() as channel:
        return replica.stub(channel).GetQueueStatus(
            pb.GetQueueStatusRequest(request_id=request_id, user_id=user_id), timeout=10
        )


def test_requests_queued_through_three_replicas_share_one_queue_and_cancel_anywhere(
    replicas: Replicas, book: ReplyBook, fake_ollama: FakeOllama, fake_ollama_b: FakeOllama
) -> None:
    held = _hold(replicas, book, 2)
    try:
        waiting = []
        for i in range(6):
            who = user(f"w{i}")
            waiting.append(
                (_submit_queued(i % 3, replicas, book.set(label(f"w{i}"), HANG), who), who)
            )
        positions = sorted(
            _status(replicas, (i + 1) % 3, rid, who).position
            for i, (rid, who) in enumerate(waiting)
        )
        assert positions == [0, 1, 2, 3, 4, 5]
        # Queued on replica 0, seen and cancelled through replica 2.
        rid, who = waiting[0]
        replica = replicas.replicas[2]
        with replica.channel() as channel:
            cancelled = replica.stub(channel).CancelRequest(
                pb.CancelRequestRequest(request_id=rid, user_id=who), timeout=10
            )
        assert cancelled.cancelled
        assert _status(replicas, 1, rid, who).state == pb.REQUEST_STATE_CANCELLED
        # Another user cannot see it from any replica.
        with pytest.raises(grpc.RpcError) as hidden:
            _status(replicas, 1, rid, "intruder")
        assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
        for rid, who in waiting[1:]:
            _cancel(replicas, rid, who)
    finally:
        _release(replicas, held)


def test_a_killed_replicas_slot_is_free_again_within_the_lease_and_its_request_failed(
    replicas: Replicas, book: ReplyBook, fake_ollama: FakeOllama, fake_ollama_b: FakeOllama
) -> None:
    victim = replicas.replicas[0]
    text = book.set(label("victim"), HANG)
    who = user("victim")
    request_id = f"v-{label('r')}"
    channel = victim.channel()
    call = victim.stub(channel).ChatStream(
        pb.ChatStreamRequest(
            message=text, user_id=who, new_conversation=True, request_id=request_id
        ),
        timeout=60,
    )
    events = iter(call)
    while next(events).WhichOneof("event") != "start":
        pass
    book.wait_received(text)
    # The other host is busy too: the next request needs the killed replica's slot.
    held = _hold(replicas, book, 1)
    try:
        replicas.kill(victim)
        killed_at = time.monotonic()
        channel.close()
        probe = book.set(label("after-kill"), Reply(chunks=("ok",)))
        status, answer = _chat(replicas.url, chat_body(user("next"), probe))
        assert status == 200 and answer["response"] == "ok"
        assert time.monotonic() - killed_at <= LEASE_S + 3.0
        state = _status(replicas, 1, request_id, who).state
        assert state == pb.REQUEST_STATE_FAILED
    finally:
        _release(replicas, held)
        replicas.restart(victim)


def test_a_frozen_replica_is_fenced_and_its_turn_is_not_stored_as_completed(
    replicas: Replicas, book: ReplyBook, fake_ollama: FakeOllama, fake_ollama_b: FakeOllama
) -> None:
    frozen = replicas.replicas[1]
    gate = threading.Event()
    text = book.set(label("frozen"), Reply(chunks=("part", " rest"), gate=gate, gate_after=1))
    who = user("frozen")
    request_id = f"f-{label('r')}"
    channel = frozen.channel()
    call = frozen.stub(channel).ChatStream(
        pb.ChatStreamRequest(
            message=text, user_id=who, new_conversation=True, request_id=request_id
        ),
        timeout=60,
    )
    kinds: list[str] = []
    try:
        for event in call:
            kinds.append(event.WhichOneof("event") or "")
            if kinds[-1] == "text_delta":
                break
        replicas.signal(frozen, signal.SIGSTOP)
        # Past the lease, another replica's dispatch ends the silent replica's grant.
        wait_until(
            lambda: _status(replicas, 2, request_id, who).state == pb.REQUEST_STATE_FAILED,
            "the frozen replica's request to be ended by another",
            timeout=LEASE_S + 8,
        )
        gate.set()  # the answer would go on: the fenced replica must not complete it
        replicas.signal(frozen, signal.SIGCONT)
        with pytest.raises(grpc.RpcError) as ended:
            for event in call:
                kinds.append(event.WhichOneof("event") or "")
        assert "done" not in kinds
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE

        # Whatever was stored of it is not a completed turn.
        def stored() -> list[Any]:
            listing = gateway_get(
                f"{replicas.url}/api/conversations", params={"user_id": who}, timeout=10
            ).json()
            return listing["conversations"]

        wait_until(lambda: bool(stored()), "the fenced turn's partial answer to be stored")
        conversation = stored()[0]["conversation_id"]
        messages = gateway_get(
            f"{replicas.url}/api/conversations/{conversation}", params={"user_id": who}, timeout=10
        ).json()["messages"]
        assert all(m["status"] != "complete" for m in messages if m["role"] == "assistant")
    finally:
        replicas.signal(frozen, signal.SIGCONT)
        channel.close()
        gate.set()


def _hold_on(replicas: Replicas, index: int, book: ReplyBook) -> tuple[str, str]:
    """A continue-policy request holding a slot, accepted by replica ``index``."""
    text = book.set(label(f"hold-on-{index}"), HANG)
    who, request_id = user(f"holder{index}"), f"h-{label('r')}"
    replica = replicas.replicas[index]
    with replica.channel() as channel:
        call = replica.stub(channel).ChatStream(
            pb.ChatStreamRequest(
                message=text,
                user_id=who,
                new_conversation=True,
                request_id=request_id,
                on_disconnect=pb.DISCONNECT_POLICY_CONTINUE,
            ),
            timeout=60,
        )
        for event in call:
            if event.WhichOneof("event") == "start":
                break
        call.cancel()
    book.wait_received(text)
    return request_id, who


def _until_done(stream: Any, timeout: float) -> Any:
    stream._thread.join(timeout)
    assert not stream._thread.is_alive(), f"stream still open: {stream}"
    return stream.ended_with()


def test_a_killed_replicas_waiting_requests_are_taken_over_and_end_done(
    replicas: Replicas, book: ReplyBook
) -> None:
    victim = replicas.replicas[0]
    holders = [_hold_on(replicas, 1, book), _hold_on(replicas, 2, book)]
    waiting = []
    for i in range(4):
        text = book.set(label(f"orphan{i}"), Reply(chunks=(f"answer {i}",)))
        who = user(f"orphan{i}")
        waiting.append((_submit_queued(0, replicas, text, who), who, f"answer {i}"))
    try:
        replicas.kill(victim)
        for request_id, who in holders:
            _cancel(replicas, request_id, who)
        streams = [LiveStream.watch(replicas.url, rid, who) for rid, who, _ in waiting]
        for stream, (_, _, answer) in zip(streams, waiting, strict=True):
            last = _until_done(stream, LEASE_S + 20)
            assert last.event == "done", (stream, last.data)
            assert last.data["response"] == answer
    finally:
        replicas.restart(victim)


def test_a_rolling_restart_under_open_streams_ends_every_stream_done(
    replicas: Replicas, book: ReplyBook
) -> None:
    bodies = []
    for i in range(24):
        text = book.set(
            label(f"roll{i}"), Reply(chunks=("one", " two", " three"), chunk_delay_s=0.1)
        )
        bodies.append(chat_body(user(f"roll{i}"), text))
    streams = [LiveStream(replicas.url, body) for body in bodies]
    for stream in streams:
        assert stream.wait_headers() == 200
    for replica in replicas.replicas:
        replicas.signal(replica, signal.SIGTERM)
        assert replica.process is not None
        replica.process.wait(30)
        replicas.restart(replica)
    for stream in streams:
        last = _until_done(stream, 60)
        assert last.event == "done", (stream, last.data)
        assert last.data["response"] == "one two three"
    # The drains really handed waiting requests over (24 streams on 2 slots: most were
    # waiting at the first SIGTERM), and those streams ended done through another replica.
    logs = replicas.logs()
    taken = [s.request_id for s in streams if f"request {s.request_id}: taken over" in logs]
    assert taken, "no replica took over a drained replica's waiting request"
