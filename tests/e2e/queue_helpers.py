"""Shared pieces of the scheduler's end-to-end tests: scripted replies, live streams, waits.

Requests are told apart by their message text (a unique label), both in the
fake's records and in the replies scripted for them. Every chat starts a new
conversation, so a user's requests never wait on each other's conversation
lock and reach the scheduler as soon as they are sent.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.stack import SseEvent, Stack, launch, parse_sse, provider_config
from tests.fakes.ollama import FakeOllama, last_user_text
from tests.fakes.script import Reply, echo_chunks
from tests.fakes.server import RecordedRequest
from tests.gateway_http import gateway_client

WAIT_S = 10.0  # upper bound of any wait for an observable state; never reached when all is well
DISCONNECT_BOUND_S = 0.25  # client gone → upstream closed, as the issue requires
HANG = Reply(chunks=("never",), hang_after=0)  # holds its slot until the upstream is closed


def user(tag: str = "u") -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}"


def label(tag: str) -> str:
    """A message text no other request of the run uses."""
    return f"{tag}-{uuid.uuid4().hex[:8]}"


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.01)


class ReplyBook:
    """The fakes' responder: a scripted reply per message text, else a slow echo.

    Several fakes (the hosts of a pool) may share one book; what they received
    is then read as one record, in arrival order.
    """

    def __init__(self, fake: FakeOllama, *more: FakeOllama, chunk_delay_s: float = 0.01) -> None:
        self._fakes = (fake, *more)
        self._replies: dict[str, Reply] = {}
        self._chunk_delay_s = chunk_delay_s
        for each in self._fakes:
            each.responder = self._reply

    def set(self, text: str, reply: Reply, *, on: FakeOllama | None = None) -> str:
        """Script the reply to ``text`` (only on the host ``on``, if given)."""
        self._replies[text if on is None else f"{on.host}:{on.port} {text}"] = reply
        return text

    def _reply(self, request: RecordedRequest) -> Reply:
        text = last_user_text(request.json)
        scripted = self._replies.get(f"{request.headers.get('host')} {text}")
        if scripted is None:
            scripted = self._replies.get(text)
        if scripted is not None:
            return scripted
        return Reply(chunks=echo_chunks(f"echo: {text}"), chunk_delay_s=self._chunk_delay_s)

    # --- what the fake saw ------------------------------------------------------

    def _chats(self) -> list[RecordedRequest]:
        chats = [r for fake in self._fakes for r in fake.chats]
        return sorted(chats, key=lambda r: r.received_at) if len(self._fakes) > 1 else chats

    def received(self) -> list[str]:
        """The user message of every chat the fakes received, in arrival order."""
        return [last_user_text(r.json) for r in self._chats()]

    def request_for(self, text: str) -> RecordedRequest | None:
        return next((r for r in self._chats() if last_user_text(r.json) == text), None)

    def wait_received(self, text: str) -> RecordedRequest:
        wait_until(lambda: self.request_for(text) is not None, f"the fake to receive {text!r}")
        request = self.request_for(text)
        assert request is not None
        return request


def queue_stack(
    tmp: Path, fake: FakeOllama, *more: FakeOllama, **sections: dict[str, Any]
) -> Stack:
    """A stack on ``fake`` with the given config sections merged in (e.g. queue=..., ollama=...).

    With ``more`` fakes the stack has a pool of hosts, each with ``ollama.parallel`` slots.
    """
    config = provider_config("ollama", fake, None)
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    if more:
        parallel = config["ollama"].get("parallel", 1)
        config["ollama"]["backends"] = [
            {"url": each.url, "parallel": parallel} for each in (fake, *more)
        ]
    return launch(tmp, config)


def chat_body(user_id: str, message: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "message": message,
        "user_id": user_id,
        "new_conversation": True,
        "request_id": uuid.uuid4().hex,
    }
    body.update(fields)
    return body


class LiveStream:
    """One ``/api/chat/stream`` call read in a background thread, events visible as they come.

    ``close_when`` is checked on every event; when it holds, the client closes
    its connection at once (``closed_at`` is the moment it did).
    """

    def __init__(
        self,
        base_url: str,
        body: dict[str, Any],
        *,
        close_when: Callable[[SseEvent], bool] | None = None,
        headers: dict[str, str] | None = None,
        watch_headers: dict[str, str] | None = None,
    ) -> None:
        # watch_headers set: re-attach (GET /api/requests/{id}/events) instead of a new chat.
        self._watch_headers = watch_headers
        self.body = body
        self._headers = headers or {}
        self.request_id: str = body["request_id"]
        self.user_id: str = body["user_id"]
        self.events: list[SseEvent] = []
        self.status_code: int | None = None
        self.error_body: dict[str, Any] | None = None
        self.headers: httpx.Headers | None = None
        self.closed_at: float | None = None
        self.failure: BaseException | None = None
        self._close_when = close_when
        self._changed = threading.Condition()
        self._ended = False
        self._thread = threading.Thread(target=self._run, args=(base_url,), daemon=True)
        self._thread.start()

    def _run(self, base_url: str) -> None:
        closing = False
        try:
            with (
                gateway_client(base_url, timeout=30) as client,
                self._open(client) as response,
            ):
                self.status_code = response.status_code
                self.headers = response.headers
                if response.status_code != 200:
                    self.error_body = json.loads(response.read())
                    return
                for item in parse_sse(response.iter_lines()):
                    if not isinstance(item, SseEvent):
                        continue
                    with self._changed:
                        self.events.append(item)
                        self._changed.notify_all()
                    if self._close_when is not None and self._close_when(item):
                        closing = True
                        break
            if closing:
                self.closed_at = time.monotonic()  # leaving the with-blocks closed the socket
        except BaseException as exc:  # reported by the test through join()
            self.failure = exc
        finally:
            with self._changed:
                self._ended = True
                self._changed.notify_all()

    def _open(self, client: httpx.Client) -> Any:
        if self._watch_headers is None:
            return client.stream("POST", "/api/chat/stream", json=self.body, headers=self._headers)
        return client.stream(
            "GET",
            f"/api/requests/{self.request_id}/events",
            params={"user_id": self.user_id},
            headers={**self._headers, **self._watch_headers},
        )

    @classmethod
    def watch(
        cls, base_url: str, request_id: str, user_id: str, last_event_id: int | None = None
    ) -> LiveStream:
        """Re-attach to a request, sending ``Last-Event-ID`` when given."""
        headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
        body = {"request_id": request_id, "user_id": user_id, "message": f"watch {request_id}"}
        return cls(base_url, body, watch_headers=headers)

    def wait_headers(self) -> int:
        """The response status, once the headers arrived."""
        wait_until(lambda: self.status_code is not None or self._ended, "response headers")
        assert self.status_code is not None, f"{self!r} ended without a response: {self.failure!r}"
        return self.status_code

    def wait_for(self, predicate: Callable[[SseEvent], bool], what: str) -> SseEvent:
        """The first event (already seen or still to come) that satisfies ``predicate``."""
        deadline = time.monotonic() + WAIT_S
        with self._changed:
            while True:
                found = next((e for e in self.events if predicate(e)), None)
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                if self._ended or left <= 0:
                    raise AssertionError(
                        f"stream {self.body['message']!r} never sent {what}; "
                        f"events: {self.events}, status {self.status_code}, {self.failure!r}"
                    )
                self._changed.wait(left)

    def wait_event(self, name: str) -> SseEvent:
        return self.wait_for(lambda e: e.event == name, f"a {name!r} event")

    def join(self) -> list[SseEvent]:
        """Wait for the stream to end; every event it carried."""
        self._thread.join(WAIT_S)
        assert not self._thread.is_alive(), f"stream {self.body['message']!r} did not end"
        if self.failure is not None:
            raise AssertionError(f"stream {self.body['message']!r} failed") from self.failure
        return self.events

    @property
    def terminal(self) -> SseEvent | None:
        last = self.events[-1] if self.events else None
        return last if last is not None and last.event in ("done", "error") else None

    def ended_with(self) -> SseEvent:
        """The stream's one terminal event (``done`` or ``error``), once it has ended."""
        self.join()
        last = self.terminal
        assert last is not None, f"stream {self.body['message']!r} has no terminal event: {self}"
        assert sum(e.event in ("done", "error") for e in self.events) == 1, self
        return last

    def positions(self) -> list[int]:
        with self._changed:
            return [e.data["position"] for e in self.events if e.event == "queued"]

    def __repr__(self) -> str:
        return f"LiveStream({self.body['message']!r}, events={[e.event for e in self.events]})"


def start_queued(stack: Stack, body: dict[str, Any]) -> LiveStream:
    """Open a stream and return once the service reports it waiting in the queue."""
    stream = LiveStream(stack.url, body)
    stream.wait_event("queued")
    return stream


def queue_status(client: httpx.Client, request_id: str, user_id: str) -> httpx.Response:
    return client.post("/api/queue/status", json={"request_id": request_id, "user_id": user_id})


def cancel(client: httpx.Client, request_id: str, user_id: str) -> httpx.Response:
    return client.post("/api/queue/cancel", json={"request_id": request_id, "user_id": user_id})


def wait_state(client: httpx.Client, request_id: str, user_id: str, state: str) -> dict[str, Any]:
    """Poll the request's status until it reads ``state``; the last status seen."""
    seen: dict[str, Any] = {}

    def reached() -> bool:
        r = queue_status(client, request_id, user_id)
        seen.update(r.json())
        return r.status_code == 200 and seen["state"] == state

    wait_until(reached, f"request {request_id} to be {state} (last seen {seen})")
    return seen


class SlotHolder:
    """Requests that take every slot and keep them until released (cancelled by their owner)."""

    def __init__(
        self, stack: Stack, book: ReplyBook, client: httpx.Client, slots: int | None = None
    ):
        self._client = client
        self.user_id = user("holder")
        self.streams: list[LiveStream] = []
        for _ in range(stack.ollama_slots if slots is None else slots):
            text = book.set(label("hold"), HANG)
            stream = LiveStream(stack.url, chat_body(self.user_id, text))
            stream.wait_event("start")
            book.wait_received(text)
            self.streams.append(stream)

    def release(self, count: int | None = None) -> None:
        """Free the first ``count`` slots still held (all by default)."""
        count = len(self.streams) if count is None else count
        freed, self.streams = self.streams[:count], self.streams[count:]
        for stream in freed:
            r = cancel(self._client, stream.request_id, self.user_id)
            assert r.status_code == 200, r.text
            assert stream.ended_with().data["code"] == "cancelled"


def open_raw_chat(stack: Stack, body: dict[str, Any]) -> socket.socket:
    """Send ``POST /api/chat`` on a plain socket; the caller closes it while the turn runs."""
    payload = json.dumps(body).encode()
    head = (
        "POST /api/chat HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{stack.http_port}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", stack.http_port), timeout=WAIT_S)
    sock.sendall(head + payload)
    return sock


def conversation_messages(
    client: httpx.Client, conversation_id: str, user_id: str
) -> list[dict[str, Any]]:
    r = client.get(f"/api/conversations/{conversation_id}", params={"user_id": user_id})
    assert r.status_code == 200, r.text
    messages: list[dict[str, Any]] = r.json()["messages"]
    return messages
