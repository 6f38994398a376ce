"""The request id: taken from ``X-Request-ID`` or made, held in a contextvar, echoed back.

A client's ``X-Request-ID`` is kept when it follows the proto's request id
rule (1..64 of ``[A-Za-z0-9_-]``); anything else is replaced by a new id (uuid4
hex) rather than refused, so a proxy that stamps its own format never costs a
request. The id the gateway settles on goes to the service as ``x-request-id``
metadata and back to the client in the ``X-Request-ID`` response header, on
every response, errors included. A chat body's own ``request_id`` wins over the
header: the route calls :func:`adopt`, and the header then carries the turn's id.
"""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.models import REQUEST_ID_PATTERN

HEADER = "x-request-id"
_HEADER_BYTES = HEADER.encode()
# The proto's request id rule (ChatRequest.request_id).
_VALID = re.compile(REQUEST_ID_PATTERN)


@dataclass(slots=True)
class RequestInfo:
    """What the logs need to know about the request being handled (mutable: routes fill it in)."""

    request_id: str
    user_id: str = ""  # the caller's user_id field, when the request names one


_current: ContextVar[RequestInfo | None] = ContextVar("gateway_request", default=None)


def current() -> RequestInfo | None:
    """The request being handled in this context, if any."""
    return _current.get()


def adopt(request_id: str) -> None:
    """Use ``request_id`` (a chat body's) as the request's id from here on."""
    info = _current.get()
    if info is not None and request_id:
        info.request_id = request_id


def note_user(user_id: str | None) -> None:
    """Record the user the request acts as, for its log lines."""
    info = _current.get()
    if info is not None and user_id:
        info.user_id = user_id


def choose(header: str | None) -> str:
    """The client's id when it is valid, else a new one."""
    if header is not None and _VALID.fullmatch(header):
        return header
    return uuid.uuid4().hex


def _header(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == _HEADER_BYTES:
            return bytes(value).decode("latin-1")
    return None


class RequestIdMiddleware:
    """Pure ASGI: sets the context for the request and adds the response header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        info = RequestInfo(choose(_header(scope)))
        token = _current.set(info)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k != _HEADER_BYTES]
                headers.append((_HEADER_BYTES, info.request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _current.reset(token)
