"""Per-user limits that hold across three replicas sharing one queue in PostgreSQL.

Each test starts its own replicas with its limit configured (apart from
test_replicas.py, so the two run on another worker than that module's stack).
Needs ``AGENT_TEST_POSTGRES_URL``; each stack lives in a schema of its own.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from agent.v1 import agent_pb2 as pb

from tests.e2e.queue_helpers import HANG, ReplyBook, chat_body, label, user
from tests.e2e.replicas import POSTGRES_URL, Replicas, replicas_config
from tests.fakes.ollama import FakeOllama

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not POSTGRES_URL, reason="AGENT_TEST_POSTGRES_URL is not set"),
    pytest.mark.timeout(120),
]


def test_max_active_holds_across_replicas(
    tmp_path: Path, fake_ollama: FakeOllama, fake_ollama_b: FakeOllama, book: ReplyBook
) -> None:
    # The cap comes from the user's tier (the users file); the defaults allow more.
    who = user("capped")
    users_file = tmp_path / "users.yaml"
    users_file.write_text(f"{who}: {{token: tok-capped, tier: small}}\n")
    users_file.chmod(0o600)
    config = replicas_config(
        fake_ollama,
        fake_ollama_b,
        limits={"max_active": 10, "tiers": {"small": {"max_active": 2}}},
        auth={"tokens_file": str(users_file)},
    )
    stack = Replicas(tmp_path, config)
    stack.start()
    try:
        codes = _open_at_once(stack, book, who, 20, (("authorization", "Bearer tok-capped"),))
        admitted = [c for c in codes if c == 0]
        refused = [c for c in codes if c == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]]
        assert len(admitted) == 2 and len(refused) == 18, str(codes)
    finally:
        stack.stop()  # its turns end with it: their upstream calls are closed


def test_the_queue_cap_per_user_holds_across_replicas(
    tmp_path: Path, fake_ollama: FakeOllama, fake_ollama_b: FakeOllama, book: ReplyBook
) -> None:
    queue = {"max_pending": 200, "max_pending_per_user": 3}
    stack = Replicas(tmp_path, replicas_config(fake_ollama, fake_ollama_b, queue=queue))
    stack.start()
    try:
        codes = _open_at_once(stack, book, user("queued"), 12)
        # Two get the two hosts' slots at once (they never wait), three may wait: not
        # three per replica.
        assert codes.count(0) == 5, str(codes)
        assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]) == 7, str(codes)
    finally:
        stack.stop()


def _open_at_once(
    stack: Replicas,
    book: ReplyBook,
    who: str,
    count: int,
    metadata: tuple[tuple[str, str], ...] = (),
) -> list[int]:
    """``count`` held requests of ``who`` sent to the three replicas in turn, all at once.

    0 for each one admitted (its first event came), else its gRPC status code's value.
    """
    texts = [book.set(label(f"at-once{i}"), HANG) for i in range(count)]
    bodies = [chat_body(who, text, on_disconnect="continue") for text in texts]

    def send(i: int) -> int:
        replica = stack.replicas[i % 3]
        with replica.channel() as channel:
            try:
                replica.stub(channel).ChatStream(
                    pb.ChatStreamRequest(
                        message=bodies[i]["message"],
                        user_id=who,
                        new_conversation=True,
                        request_id=bodies[i]["request_id"],
                        on_disconnect=pb.DISCONNECT_POLICY_CONTINUE,
                    ),
                    # The first event or the refusal: 5 s was too short once, on a
                    # loaded CI machine (one of twenty answered neither in time).
                    timeout=30,
                    metadata=metadata,
                ).__next__()
            except grpc.RpcError as exc:
                return int(exc.code().value[0])
        return 0

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(send, range(count)))


def test_requests_per_minute_holds_across_replicas(
    tmp_path: Path, fake_ollama: FakeOllama, fake_ollama_b: FakeOllama, book: ReplyBook
) -> None:
    stack = Replicas(
        tmp_path, replicas_config(fake_ollama, fake_ollama_b, limits={"requests_per_minute": 3})
    )
    stack.start()
    try:
        who = user("rated")
        codes = []
        for i in range(6):  # two through each replica, one after another
            replica = stack.replicas[i % 3]
            with replica.channel() as channel:
                try:
                    replica.stub(channel).Chat(
                        pb.ChatRequest(message=f"hi {i}", user_id=who, new_conversation=True),
                        timeout=30,
                    )
                    codes.append(grpc.StatusCode.OK)
                except grpc.RpcError as exc:
                    codes.append(exc.code())
        assert codes.count(grpc.StatusCode.OK) == 3, codes  # not 3 per replica
        assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 3, codes
    finally:
        stack.stop()
