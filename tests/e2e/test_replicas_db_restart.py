"""PostgreSQL restarted under three replicas: nothing acknowledged is lost, nobody restarts.

The database is a private cluster of this test's own (never the shared one),
stopped and started again while turns run and wait. During the outage new
requests get 503 with Retry-After (no 500); the running turns finish and are
stored once the database is back, the waiting ones run, and the replicas
serve again without a restart. The outage is shorter than ``scheduler.lease_s``,
the time a replica that cannot renew keeps its grants.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.queue_helpers import LiveStream, ReplyBook, chat_body, label, user, wait_until
from tests.e2e.replicas import Replicas
from tests.fakes.ollama import FakeOllama
from tests.fakes.script import Reply
from tests.gateway_http import gateway_get, gateway_post
from tests.store.private_postgres import PrivateCluster, private_cluster

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    with private_cluster() as started:
        yield started


def test_a_database_restart_loses_no_acknowledged_turn_and_the_replicas_recover(
    tmp_path: Any, cluster: PrivateCluster, fake_ollama: FakeOllama, fake_ollama_b: FakeOllama
) -> None:
    book = ReplyBook(fake_ollama, fake_ollama_b)
    config = {
        "api": {"provider": "ollama"},
        "ollama": {
            "model": "llama3.2",
            "backends": [
                {"url": fake_ollama.url, "parallel": 1},
                {"url": fake_ollama_b.url, "parallel": 1},
            ],
        },
        "scheduler": {"lease_s": 15},
        "store": {},  # the URL comes from the harness: the private cluster, write_retry_s below
    }
    stack = Replicas(tmp_path, config, database_url=f"{cluster.url}?write_retry_s=60")
    stack.start()
    gate = threading.Event()
    try:
        running = []
        for i in range(2):  # both slots: answers that wait for the gate after one chunk
            text = book.set(
                label(f"run{i}"), Reply(chunks=("half", " whole"), gate=gate, gate_after=1)
            )
            running.append(LiveStream(stack.url, chat_body(user(f"r{i}"), text)))
            running[-1].wait_event("message")
        waiting = []
        for i in range(3):
            text = book.set(label(f"wait{i}"), Reply(chunks=(f"later {i}",)))
            waiting.append(LiveStream(stack.url, chat_body(user(f"w{i}"), text)))
            waiting[-1].wait_event("queued")

        cluster.stop()
        refused = []
        for i in range(5):
            answer = gateway_post(
                f"{stack.url}/api/chat", json=chat_body(user("outage"), f"during {i}"), timeout=30
            )
            refused.append((answer.status_code, answer.headers.get("retry-after")))
        assert all(code == 503 and retry for code, retry in refused), refused
        cluster.start()
        gate.set()

        for stream in running:
            last = stream.ended_with()
            assert (last.event, last.data.get("response")) == ("done", "half whole"), (
                stream,
                last.data,
            )
        for i, stream in enumerate(waiting):
            last = stream.ended_with()
            assert (last.event, last.data.get("response")) == ("done", f"later {i}"), (
                stream,
                last.data,
            )
        # Every acknowledged turn is stored, and the replicas serve again as they are.
        for stream in running + waiting:
            who, conversation = stream.user_id, stream.terminal.data["conversation_id"]  # type: ignore[union-attr]
            messages = gateway_get(
                f"{stack.url}/api/conversations/{conversation}",
                params={"user_id": who},
                timeout=30,
            ).json()["messages"]
            assert [m["status"] for m in messages] == ["complete", "complete"]

        def serves() -> bool:
            answer = gateway_post(
                f"{stack.url}/api/chat", json=chat_body(user("after"), "after"), timeout=30
            )
            return answer.status_code == 200

        wait_until(serves, "a request after the restart to succeed", timeout=30)
        assert all(r.process is not None and r.process.alive() for r in stack.replicas)
    finally:
        gate.set()
        stack.stop()
