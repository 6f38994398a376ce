"""Relays a ChatStream call to the client as Server-Sent Events.

A hand-written ASGI response rather than an SSE library: it must (1) turn an
error that arrives before the first event into a plain HTTP error with the
right status and Retry-After, (2) end every stream with exactly one ``done``
or ``error`` event, (3) cancel the gRPC call the moment the client goes away,
in every phase, which needs its own watch on ``http.disconnect``,
(4) send keep-alive comments only while the stream is idle, (5) number
every frame (``id: <seq>``, error frames too, ids only growing) so a client
can re-attach with ``Last-Event-ID``,
and (6) end with an ``error`` event, not a cut connection, when ``stop`` says
so (the gateway drains).

The same response relays a WatchRequest call (``watch=True``). There the
service sends response metadata once it has found the request, and from then
on every failure is the request's outcome and goes out as an ``error`` event;
before it (unknown id, someone else's, bad auth) it is a plain HTTP error.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any, Protocol

import grpc
from agent.v1 import agent_pb2 as pb
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send

from gateway import convert
from gateway.errors import GatewayError, from_rpc_error
from gateway.reattach import Reattach, is_cut

_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_KEEPALIVE = b": keep-alive\n\n"


_ATTACHED = ("agent-watch", "attached")


def encode(event: str, data: dict[str, Any], seq: int) -> bytes:
    """One SSE frame; JSON never holds a raw newline, so one data line suffices."""
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"id: {seq}\nevent: {event}\ndata: {payload}\n\n".encode()


def _same(message: Any) -> pb.ChatStreamResponse:
    event: pb.ChatStreamResponse = message
    return event


def _inner(message: Any) -> pb.ChatStreamResponse:
    event: pb.ChatStreamResponse = message.event
    return event


class StreamStop(Protocol):
    """Ends open streams early: calls back with the error they end with; returns an undo."""

    def on_expiry(self, callback: Callable[[GatewayError], None]) -> Callable[[], None]: ...


_Call = grpc.aio.UnaryStreamCall[Any, Any]


class ChatEventStream(Response):
    """ASGI response for one streamed chat turn (a Response, so FastAPI passes it through)."""

    media_type = "text/event-stream"  # also what the OpenAPI document says of the route

    def __init__(
        self,
        call: _Call,
        keepalive_s: float,
        stop: StreamStop | None = None,
        *,
        watch: bool = False,
        after: int = 0,
        reattach: Reattach | None = None,
    ) -> None:
        super().__init__(media_type="text/event-stream")
        self._call = call
        self._stop = stop
        self._keepalive_s = keepalive_s
        self._watch = watch
        self._event: Callable[[Any], pb.ChatStreamResponse] = _inner if watch else _same
        self._last_write = 0.0
        self._finished = False
        self._client_gone = False
        # Every frame is numbered, and numbers only grow: see _number.
        self._last_seq = after
        self._reattach = reattach  # picks a cut stream up again through another replica

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watcher = asyncio.create_task(self._watch_disconnect(receive))
        try:
            await self._relay(scope, receive, send)
        finally:
            watcher.cancel()
            self._call.cancel()

    async def _watch_disconnect(self, receive: Receive) -> None:
        while True:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                # Cancelling the call wakes the relay with CancelledError or EOF.
                self._client_gone = True
                self._call.cancel()
                return

    async def _relay(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._watch and await self._attached():
            await self._open(send, None, asyncio.ensure_future(self._call.read()))
            return
        if self._watch and self._reattach is not None and await self._cut_before_attaching():
            moved = await self._reattach(self._last_seq)
            if moved is not None:  # its replica was gone: followed through another one
                self._call = moved
                await self._open(send, None, asyncio.ensure_future(moved.read()))
                return
        first = asyncio.ensure_future(self._call.read())
        try:
            # An early failure (auth, validation, queue full) becomes a plain HTTP error.
            done, _ = await asyncio.wait({first}, timeout=self._keepalive_s)
        except asyncio.CancelledError:
            first.cancel()
            raise
        if first in done:
            try:
                message = first.result()
            except grpc.aio.AioRpcError as exc:
                error = from_rpc_error(exc)
                response = JSONResponse(error.body(), error.status, headers=error.headers())
                await response(scope, receive, send)
                return
            except asyncio.CancelledError:
                return  # the client went away before anything was sent
            pending: asyncio.Future[Any] | None = None
        else:
            message = None
            pending = first
        await self._open(send, message, pending)

    async def _attached(self) -> bool:
        """Whether the service found the watched request (False: it failed, or went quiet)."""
        try:
            metadata = await self._call.initial_metadata()
            if metadata is not None and _ATTACHED in tuple(metadata):
                return True
            # No marker: the call is ending. grpc gives no initial metadata at all when the
            # call had ended before they were read (a busy loop), so the service repeats the
            # marker in the trailing metadata of a found request's error.
            trailing = await self._call.trailing_metadata()
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            return False
        return trailing is not None and _ATTACHED in tuple(trailing)

    async def _cut_before_attaching(self) -> bool:
        """The watch failed because its replica's connection died (not: no such request)."""
        try:
            code = await self._call.code()
            trailing = await self._call.trailing_metadata()
        except asyncio.CancelledError:
            return False
        error = grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing or grpc.aio.Metadata())
        return is_cut(error)

    async def _open(self, send: Send, message: Any, pending: asyncio.Future[Any] | None) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
        if message is not None:
            # The first event is in hand and goes out next: no keep-alive ahead of it.
            self._last_write = time.monotonic()
        ticker = asyncio.create_task(self._keepalive(send))
        try:
            await self._pump_until_stopped(send, message, pending)
        except (asyncio.CancelledError, OSError):
            pass  # client gone: the finally of __call__ cancels the call
        finally:
            ticker.cancel()

    async def _pump_until_stopped(
        self, send: Send, message: Any, pending: asyncio.Future[Any] | None
    ) -> None:
        if self._stop is None:
            await self._pump(send, message, pending)
            return
        # The stop cancels this very task (no task of its own per stream), and the
        # stream then ends with the stop's error event.
        task = asyncio.current_task()
        assert task is not None
        stopped: list[GatewayError] = []

        def stop(error: GatewayError) -> None:
            if not self._finished:
                stopped.append(error)
                task.cancel()

        undo = self._stop.on_expiry(stop)
        try:
            await self._pump(send, message, pending)
        except asyncio.CancelledError:
            if not stopped or task.uncancel() > 0:
                raise  # cancelled for another reason too (the client went away)
            await self._write(send, self._error_frame(stopped[0]), more=False)
        finally:
            undo()

    async def _pump(self, send: Send, message: Any, pending: asyncio.Future[Any] | None) -> None:
        terminal: bytes | None = None
        while terminal is None:
            try:
                if pending is not None:
                    message = await pending
                    pending = None
                while message is not grpc.aio.EOF:
                    event = self._event(message)
                    name, data = convert.stream_event(event)
                    if name == "done":
                        terminal = encode(name, data, self._number(event.seq))
                        break
                    await self._write(send, encode(name, data, self._number(event.seq)))
                    message = await self._call.read()
                if terminal is None:
                    terminal = self._error_frame(
                        GatewayError(
                            500, "internal", "the service ended the stream without an answer"
                        )
                    )
            except grpc.aio.AioRpcError as exc:
                # call.cancelled() is also true when the service ended the call with CANCELLED
                # (the request was cancelled by its owner): that one gets its error event.
                if exc.code() is grpc.StatusCode.CANCELLED and self._client_gone:
                    raise asyncio.CancelledError from exc  # we cancelled it: client gone
                moved = None
                if self._reattach is not None and is_cut(exc):
                    moved = await self._reattach(self._last_seq)
                if moved is None:
                    terminal = self._error_frame(from_rpc_error(exc))
                else:  # the same request, followed through another replica
                    self._call, self._event = moved, _inner
                    pending = asyncio.ensure_future(moved.read())
        await self._write(send, terminal, more=False)

    def _number(self, seq: int) -> int:
        """The id of the next frame: the service's number when it runs ahead, else the next one.

        The service numbers the events it buffers. A frame it did not number (an
        error, a done rebuilt from the store: seq 0), or the last event sent again
        to a client that re-attached at or past it, gets the number after the
        last one this client knows, so ids never repeat or go back.
        """
        self._last_seq = seq if seq > self._last_seq else self._last_seq + 1
        return self._last_seq

    def _error_frame(self, error: GatewayError) -> bytes:
        return encode("error", error.event_data(), self._number(0))

    async def _write(self, send: Send, frame: bytes, *, more: bool = True) -> None:
        if self._finished:
            return
        self._finished = not more
        self._last_write = time.monotonic()
        await send({"type": "http.response.body", "body": frame, "more_body": more})

    async def _keepalive(self, send: Send) -> None:
        while True:
            idle = time.monotonic() - self._last_write
            if idle >= self._keepalive_s:
                await self._write(send, _KEEPALIVE)
                idle = 0.0
            await asyncio.sleep(self._keepalive_s - idle)
