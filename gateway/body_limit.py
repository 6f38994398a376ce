"""Refuse request bodies over ``api_server.max_body_bytes`` with 413, then drain what is left.

A declared ``Content-Length`` over the limit is answered at once, without
reading a byte of the body first; a chunked (or understated) body is counted
as it arrives and refused the moment it passes the limit. 413 is not a
retryable status: the same body will never fit.

A client that sends its whole body before it reads (Python's http.client,
many mobile stacks) must still see the 413. Closing a socket with unread
bytes in it makes the kernel reset the connection, and the reset can reach
the client before the answer. So, as nginx's lingering close does, the whole
413 is written first and the rest of the body is then read and thrown away,
bounded in bytes and in time, before the response ends. Such an answer says
``Connection: close``: past a bound the rest of the body stays unread, so the
connection cannot carry another request, and the server closes it when the
drain ends (otherwise it would idle until a keep-alive or header timeout,
whose 408 would follow the 413). A client that asked
``Expect: 100-continue`` and has sent nothing is not invited to send.
"""

from __future__ import annotations

import asyncio

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.http_errors import error_json

_CODE = "payload_too_large"
# What a refused body may still cost: enough for the uploads a phone sends, never unbounded.
DRAIN_MAX_BYTES = 64 * 1024 * 1024
DRAIN_MAX_S = 10.0


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes the limit (the app answers 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


class _Body:
    """What has been read of one request's body."""

    def __init__(self, scope: Scope) -> None:
        headers = dict(scope["headers"])
        self.received = 0
        # No body announced: nothing can be left unread.
        self.done = not (_content_length(scope) or b"transfer-encoding" in headers)
        self.expects_continue = headers.get(b"expect", b"").lower() == b"100-continue"

    def unread(self) -> bool:
        """Whether bytes of the body may still be in the socket, and we may ask for them."""
        if self.done:
            return False
        return not (self.expects_continue and self.received == 0)


class BodySizeLimit:
    """ASGI middleware: at most ``max_bytes`` of request body per request."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        *,
        drain_max_bytes: int = DRAIN_MAX_BYTES,
        drain_max_s: float = DRAIN_MAX_S,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.drain_max_bytes = drain_max_bytes
        self.drain_max_s = drain_max_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = _Body(scope)
        started = False

        async def counted_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                body.received += len(message.get("body", b""))
                body.done = not message.get("more_body", False)
                if body.received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            else:
                body.done = True  # the client went away
            return message

        async def lingering_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start" and body.unread():
                headers = [*message.get("headers", ()), (b"connection", b"close")]
                message = {**message, "headers": headers}
            started = started or message["type"] == "http.response.start"
            last = message["type"] == "http.response.body" and not message.get("more_body")
            if last and body.unread():
                # The whole answer goes out first; then the rest of the body is read.
                await send({**message, "more_body": True})
                await self._drain(receive)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            await send(message)

        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            response = error_json(413, _CODE, BodyTooLarge(self.max_bytes).detail)
            await response(scope, receive, lingering_send)
            return
        try:
            await self.app(scope, counted_receive, lingering_send)
        except BodyTooLarge as exc:
            # Raised where no exception handler sees it (e.g. a middleware reading the body).
            if started:
                raise
            await error_json(413, _CODE, exc.detail)(scope, receive, lingering_send)

    async def _drain(self, receive: Receive) -> None:
        """Read and drop the rest of the body, up to the byte and time bounds."""
        left = self.drain_max_bytes
        try:
            async with asyncio.timeout(self.drain_max_s):
                while left >= 0:
                    message = await receive()
                    if message["type"] != "http.request" or not message.get("more_body"):
                        return
                    left -= len(message.get("body", b""))
        except TimeoutError:
            return


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP server refuses a malformed length before we run
    return None
