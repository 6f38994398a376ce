"""A PostgreSQL outage over the real stack: 503 + Retry-After everywhere, nothing acknowledged lost.

The service stores into a private PostgreSQL cluster (never the shared
one) that the test stops and starts again under it, without restarting the
service or the gateway.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.e2e.stack import SseEvent, Stack, launch, parse_sse, stream_events
from tests.fakes.ollama import FakeOllama
from tests.fakes.script import Reply
from tests.gateway_http import gateway_client
from tests.store.private_postgres import PrivateCluster, private_cluster

OUTAGE_LINE = "store unavailable ("
BACK_LINE = "store available again"


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    with private_cluster() as started:
        yield started


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, fake_ollama: FakeOllama, cluster: PrivateCluster
) -> Iterator[Stack]:
    config = {
        "api": {"provider": "ollama"},
        "ollama": {"url": fake_ollama.url, "model": "llama3.2", "parallel": 2},
        # A turn's final write waits out the outage for up to a minute (the default is 20 s).
        "store": {"url": f"{cluster.url}?write_retry_s=60"},
    }
    s = launch(tmp_path_factory.mktemp("outage"), config)
    yield s
    s.stop()


def _wait_for(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class _Stream:
    """A chat stream read by a thread: its events, and a flag once the first token arrived."""

    def __init__(self, base_url: str, body: dict[str, object]) -> None:
        self.events: list[SseEvent] = []
        self.status = 0
        self.first_token = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(base_url, body), daemon=True)
        self._thread.start()

    def _read(self, base_url: str, body: dict[str, object]) -> None:
        with (
            gateway_client(base_url, timeout=120) as client,
            client.stream("POST", "/api/chat/stream", json=body) as response,
        ):
            self.status = response.status_code
            for item in parse_sse(response.iter_lines()):
                if isinstance(item, SseEvent):
                    self.events.append(item)
                    if item.event == "message":
                        self.first_token.set()

    def ended(self) -> bool:
        return not self._thread.is_alive()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the stream did not end"


def test_database_outage_is_503_on_every_route_and_nothing_acknowledged_is_lost(
    stack: Stack, cluster: PrivateCluster, fake_ollama: FakeOllama
) -> None:
    who = f"o-{uuid.uuid4().hex[:8]}"
    seen: list[httpx.Response] = []
    with gateway_client(stack.url, timeout=30, event_hooks={}) as http:

        def call(method: str, url: str, **kw: object) -> httpx.Response:
            response = http.request(method, url, **kw)  # type: ignore[arg-type]
            seen.append(response)
            return response

        # Acknowledged before the outage: a full answer and a streamed one.
        first = call("POST", "/api/chat", json={"message": "before one", "user_id": who})
        assert first.status_code == 200, first.text
        conversation = first.json()["conversation_id"]
        events = stream_events(
            http,
            "/api/chat/stream",
            {"message": "before two", "user_id": who, "conversation_id": conversation},
        )
        assert events[-1].event == "done", events
        spare = call(
            "POST", "/api/chat", json={"message": "spare", "user_id": who, "new_conversation": True}
        )
        spare_id = spare.json()["conversation_id"]
        assert call("GET", "/health/ready").status_code == 200

        # A turn is streaming when the database goes away; its answer ends during the outage.
        gate = threading.Event()
        fake_ollama.push(Reply.text("streamed", " through", " the outage", gate=gate, gate_after=1))
        through = _Stream(
            stack.url,
            {"message": "during", "user_id": who, "conversation_id": conversation},
        )
        assert through.first_token.wait(30), through.events
        cluster.stop()
        gate.set()
        assert stack.service is not None
        service = stack.service
        _wait_for(lambda: OUTAGE_LINE in service.log(), "the outage to be logged")
        assert not through.ended(), through.events  # its final write is waiting for the store

        # Every route that needs the store: 503 + Retry-After, reason STORE_UNAVAILABLE.
        q = {"user_id": who}
        during = {
            "chat": call("POST", "/api/chat", json={"message": "x", "user_id": who}),
            "chat in conversation": call(
                "POST",
                "/api/chat",
                json={"message": "x", "user_id": who, "conversation_id": conversation},
            ),
            "command": call("POST", "/api/chat", json={"message": "/usage", "user_id": who}),
            "stream": call("POST", "/api/chat/stream", json={"message": "x", "user_id": who}),
            "list": call("GET", "/api/conversations", params=q),
            "get": call("GET", f"/api/conversations/{conversation}", params=q),
            "delete": call("DELETE", f"/api/conversations/{spare_id}", params=q),
            "status": call("GET", "/api/status", params=q),
        }
        for route, response in during.items():
            assert response.status_code == 503, (route, response.status_code, response.text)
            assert int(response.headers["Retry-After"]) >= 1, route
            body = response.json()
            assert body["code"] == "unavailable" and body["reason"] == "STORE_UNAVAILABLE", body
        _wait_for(
            lambda: "store unavailable" in call("GET", "/health/ready").text,
            "readiness to say 'store unavailable'",
        )
        assert seen[-1].status_code == 503

        # The database comes back; nothing is restarted but the database.
        cluster.start()
        through.join(60)
        assert through.status == 200
        assert [e.event for e in through.events][-1] == "done", through.events
        _wait_for(lambda: call("GET", "/health/ready").status_code == 200, "readiness")
        again = call(
            "POST",
            "/api/chat",
            json={"message": "after", "user_id": who, "conversation_id": conversation},
        )
        assert again.status_code == 200, again.text
        assert call("GET", "/api/status", params=q).status_code == 200
        assert call("GET", "/api/conversations", params=q).status_code == 200
        assert call("DELETE", f"/api/conversations/{spare_id}", params=q).status_code == 200

        # Every acknowledged turn is there, the one streamed during the outage included.
        stored = call("GET", f"/api/conversations/{conversation}", params=q)
        assert stored.status_code == 200, stored.text
        texts = [(m["role"], m["text"]) for m in stored.json()["messages"]]
        assert [t for role, t in texts if role == "user"] == [
            "before one",
            "before two",
            "during",
            "after",
        ]
        assert ("assistant", "streamed through the outage") in texts

    assert not [r for r in seen if r.status_code >= 500 and r.status_code != 503], [
        (r.request.url, r.status_code, r.text) for r in seen if r.status_code >= 500
    ]
    log = service.log()
    assert log.count(OUTAGE_LINE) == 1, log
    assert log.count(BACK_LINE) == 1, log
    assert "Traceback" not in log, log


def test_connections_killed_by_the_server_are_replaced_without_an_error(
    stack: Stack, cluster: PrivateCluster
) -> None:
    who = f"k-{uuid.uuid4().hex[:8]}"
    statuses: list[tuple[str, int]] = []
    stop = threading.Event()

    def traffic(kind: str) -> None:
        with gateway_client(stack.url, timeout=30) as http:
            n = 0
            while not stop.is_set():
                n += 1
                if kind == "read":
                    r = http.get("/api/conversations", params={"user_id": who})
                else:
                    r = http.post("/api/chat", json={"message": f"turn {n}", "user_id": who})
                statuses.append((kind, r.status_code))

    assert stack.service is not None
    service = stack.service
    outages_before = service.log().count(OUTAGE_LINE)
    tracebacks_before = service.log().count("Traceback")
    workers = [threading.Thread(target=traffic, args=(k,)) for k in ("read", "read", "chat")]
    for worker in workers:
        worker.start()
    try:
        for _ in range(3):  # kill every session of the service while requests are in flight
            _wait_for(lambda: len(statuses) >= 5, "some traffic")
            statuses_before = len(statuses)
            assert cluster.terminate_sessions("agent-service") >= 1
            _wait_for(lambda: len(statuses) >= statuses_before + 5, "traffic after the kill")
    finally:
        stop.set()
        for worker in workers:
            worker.join(60)
    failed = [s for s in statuses if s[1] != 200]
    assert not failed, failed
    assert len(statuses) >= 15
    log = service.log()
    assert log.count(OUTAGE_LINE) == outages_before, log  # a killed connection is no outage
    assert log.count("Traceback") == tracebacks_before, log
