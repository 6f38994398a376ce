"""A stream cut by its replica is re-attached through another; a reported outcome is not."""

from __future__ import annotations

from typing import Any

import grpc
import httpx
from agent.v1 import agent_pb2 as pb
from starlette.types import Receive, Scope, Send

from gateway.reattach import is_cut, reattacher
from gateway.sse import ChatEventStream
from tests.test_sse import ATTACHED, ScriptedCall, done, events, rpc_error, text

CUT = grpc.aio.AioRpcError(
    grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "Socket closed"
)
REPORTED = grpc.aio.AioRpcError(
    grpc.StatusCode.UNAVAILABLE,
    grpc.aio.Metadata(),
    grpc.aio.Metadata(("grpc-status-details-bin", b"\x08\x0e")),
    "the ollama host went down while this answer was streaming; retry the request",
)


async def relay(call: Any, reattach: Any) -> httpx.Response:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await ChatEventStream(call, 15.0, reattach=reattach)(scope, receive, send)

    # A lone ChatEventStream on a path outside the document, not the gateway's app.
    transport = httpx.ASGITransport(app=app)  # not the gateway
    client = httpx.AsyncClient(transport=transport, base_url="http://gw")  # not the gateway
    async with client:
        return await client.get("/events")


def _with_reason(reason: str) -> grpc.aio.AioRpcError:
    from google.protobuf import any_pb2
    from google.rpc import error_details_pb2, status_pb2

    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=reason, domain="agent.v1.AgentService"))
    status = status_pb2.Status(code=14, message="moved", details=[detail])
    trailing = grpc.aio.Metadata(("grpc-status-details-bin", status.SerializeToString()))
    return grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), trailing, "moved")


def test_a_request_handed_over_by_a_draining_replica_counts_as_cut() -> None:
    assert is_cut(_with_reason("REQUEST_MOVED"))
    assert not is_cut(_with_reason("PROVIDER_FAILED"))


def test_a_cut_is_told_from_a_reported_outcome() -> None:
    assert is_cut(CUT)
    assert not is_cut(REPORTED)  # the service said why: that is the request's outcome
    not_found = grpc.aio.AioRpcError(
        grpc.StatusCode.NOT_FOUND, grpc.aio.Metadata(), grpc.aio.Metadata(), "no"
    )
    assert not is_cut(not_found)


async def test_a_cut_stream_goes_on_through_another_replica_after_its_last_event() -> None:
    asked: list[int] = []
    later = ScriptedCall(
        [
            pb.WatchRequestResponse(event=text(9_000_001, " world")),
            pb.WatchRequestResponse(event=done(9_000_002, "hello world")),
        ],
        ATTACHED,
    )

    async def reattach(after: int) -> Any:
        asked.append(after)
        return later

    response = await relay(ScriptedCall([text(1, "hel"), text(2, "lo"), CUT]), reattach)
    got = events(response)
    assert [e.event for e in got] == ["message", "message", "message", "done"]
    assert asked == [2]  # re-attached after the last event the client had
    assert got[-1].data["response"] == "hello world"
    ids = [e.id for e in got]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)  # ids only grow


async def test_a_reported_failure_is_passed_on_without_re_attaching() -> None:
    asked: list[int] = []

    async def reattach(after: int) -> Any:
        asked.append(after)
        return None

    response = await relay(ScriptedCall([text(1, "a"), REPORTED]), reattach)
    got = events(response)
    assert [e.event for e in got] == ["message", "error"]
    assert got[-1].data["code"] == "unavailable" and asked == []


async def test_when_no_replica_can_take_it_the_cut_is_the_error() -> None:
    async def reattach(after: int) -> Any:
        return None

    response = await relay(ScriptedCall([text(1, "a"), CUT]), reattach)
    got = events(response)
    assert [e.event for e in got] == ["message", "error"]
    assert got[-1].data["code"] == "unavailable"


async def test_a_re_attach_to_a_request_that_already_failed_returns_its_outcome() -> None:
    # The initial metadata are lost when the call ended before they were read; the
    # marker in the error's trailers says the request was found: its status is the outcome.
    failed = rpc_error(grpc.StatusCode.ABORTED, "request r1 failed", ATTACHED)
    ended = ScriptedCall([failed], trailing=ATTACHED)

    class Stub:
        def WatchRequest(self, request: Any, **kwargs: Any) -> ScriptedCall:
            return ended

    attach = reattacher(Stub(), "r1", "u1", (), give_up_after_s=1, timeout_s=5)
    assert await attach(3) is ended
