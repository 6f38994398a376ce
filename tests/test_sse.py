"""The SSE response at its ASGI seam, driven by a scripted stand-in for the gRPC call."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import httpx
from agent.v1 import agent_pb2 as pb
from starlette.types import Receive, Scope, Send

from gateway.sse import ChatEventStream
from tests.e2e.stack import SseEvent, parse_sse


class ScriptedCall:
    """Answers read() from a list: messages, then EOF, or an AioRpcError."""

    def __init__(
        self,
        items: list[Any],
        metadata: tuple[tuple[str, str], ...] = (),
        trailing: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self._items: Iterator[Any] = iter(items)
        self._metadata = metadata
        self._trailing = trailing
        self.cancelled = False

    async def initial_metadata(self) -> grpc.aio.Metadata:
        return grpc.aio.Metadata(*self._metadata)

    async def trailing_metadata(self) -> grpc.aio.Metadata:
        return grpc.aio.Metadata(*self._trailing)

    async def read(self) -> Any:
        item = next(self._items, grpc.aio.EOF)
        if isinstance(item, BaseException):
            raise item
        return item

    def cancel(self) -> bool:
        self.cancelled = True
        return True


def rpc_error(
    code: grpc.StatusCode, details: str, trailing: tuple[tuple[str, str], ...] = ()
) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing), details)


def text(seq: int, value: str) -> pb.ChatStreamResponse:
    return pb.ChatStreamResponse(text_delta=pb.TextDeltaEvent(text=value), seq=seq)


def done(seq: int, answer: str) -> pb.ChatStreamResponse:
    return pb.ChatStreamResponse(done=pb.ChatResponse(response=answer, request_id="r1"), seq=seq)


async def get(call: ScriptedCall, *, watch: bool = False, after: int = 0) -> httpx.Response:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        stream = ChatEventStream(call, 15.0, watch=watch, after=after)  # type: ignore[arg-type]
        await stream(scope, receive, send)

    # A lone ChatEventStream on a path outside the document, not the gateway's app.
    transport = httpx.ASGITransport(app=app)  # not the gateway
    client = httpx.AsyncClient(transport=transport, base_url="http://gw")  # not the gateway
    async with client:
        return await client.get("/events")


def events(response: httpx.Response) -> list[SseEvent]:
    return [e for e in parse_sse(iter(response.text.splitlines())) if isinstance(e, SseEvent)]


async def test_every_frame_carries_its_seq_as_the_sse_id() -> None:
    response = await get(ScriptedCall([text(1, "a"), text(2, "b"), done(3, "ab")]))
    assert response.status_code == 200
    assert [(e.id, e.event) for e in events(response)] == [
        (1, "message"),
        (2, "message"),
        (3, "done"),
    ]
    assert "id: 1\nevent: message\n" in response.text


ATTACHED = (("agent-watch", "attached"),)


async def test_a_done_rebuilt_from_the_store_is_numbered_after_the_last_event_id() -> None:
    call = ScriptedCall([pb.WatchRequestResponse(event=done(0, "stored"))], ATTACHED)
    response = await get(call, watch=True, after=12)
    [only] = events(response)
    assert (only.event, only.id, only.data["response"]) == ("done", 13, "stored")


async def test_an_error_event_has_the_next_id() -> None:
    call = ScriptedCall([text(1, "a"), text(2, "b"), rpc_error(grpc.StatusCode.UNAVAILABLE, "x")])
    response = await get(call)
    assert [(e.id, e.event) for e in events(response)] == [
        (1, "message"),
        (2, "message"),
        (3, "error"),
    ]


async def test_a_re_attach_past_the_end_gets_the_done_again_numbered_after_it() -> None:
    # The service sends its last event again (numbered 7) to a client that says it saw 9.
    call = ScriptedCall([pb.WatchRequestResponse(event=done(7, "all"))], ATTACHED)
    response = await get(call, watch=True, after=9)
    [only] = events(response)
    assert (only.event, only.id) == ("done", 10)


async def test_an_error_before_the_first_event_is_a_plain_http_error() -> None:
    response = await get(ScriptedCall([rpc_error(grpc.StatusCode.NOT_FOUND, "no request")]))
    assert response.status_code == 404
    assert response.json() == {"detail": "no request", "code": "not_found"}


async def test_a_watch_of_an_unknown_request_is_a_404() -> None:
    call = ScriptedCall([rpc_error(grpc.StatusCode.NOT_FOUND, "no request with id 'x'")])
    response = await get(call, watch=True)
    assert response.status_code == 404 and response.json()["code"] == "not_found"


async def test_a_watch_of_a_found_request_reports_its_failure_as_an_error_event() -> None:
    attached = (("agent-watch", "attached"),)
    call = ScriptedCall(
        [
            pb.WatchRequestResponse(event=text(4, "late")),
            rpc_error(grpc.StatusCode.CANCELLED, "request r1 was cancelled"),
        ],
        attached,
    )
    response = await get(call, watch=True)
    assert response.status_code == 200
    got = events(response)
    assert [(e.id, e.event) for e in got] == [(4, "message"), (5, "error")]
    assert got[-1].data == {
        "code": "cancelled",
        "message": "request r1 was cancelled",
        "status": 499,
    }


async def test_a_watch_whose_only_event_is_the_outcome_is_still_a_stream() -> None:
    call = ScriptedCall(
        [rpc_error(grpc.StatusCode.ABORTED, "request r1 failed")], (("agent-watch", "attached"),)
    )
    response = await get(call, watch=True)
    assert response.status_code == 200
    [only] = events(response)
    assert only.event == "error" and only.data["code"] == "aborted"


async def test_a_watch_that_ended_before_its_metadata_was_read_is_told_by_its_trailers() -> None:
    # grpc hands out no initial metadata once the call has ended before they were read (the
    # gateway's loop was busy); the service repeats the marker in the error's trailers.
    cancelled = rpc_error(grpc.StatusCode.CANCELLED, "request r1 was cancelled", ATTACHED)
    response = await get(ScriptedCall([cancelled], trailing=ATTACHED), watch=True)
    assert response.status_code == 200
    [only] = events(response)
    assert only.event == "error" and only.data["code"] == "cancelled"
