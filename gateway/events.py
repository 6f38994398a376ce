"""The events of the SSE routes: the schema of each event's ``data``.

On the wire a frame is ``id: <n>``, ``event: <name>`` and ``data: <JSON>``.
The OpenAPI document describes each frame the way OpenAPI 3.2 does for
``text/event-stream`` (``itemSchema``: an object of ``id``, ``event`` and
``data`` strings); ``StreamFrame`` is the union of the frames, tagged by
``event``, and each frame's ``data`` names its model here through
``contentSchema``. The models sit under ``components.schemas``, so client
generators emit them and a client decodes ``data`` with them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from gateway.models import ChatResponse


class QueuedEvent(BaseModel):
    """``queued``: the request waits; sent again whenever its position changes."""

    request_id: str
    position: int = Field(description="Requests that would start before this one")
    estimated_wait_s: float


class StartEvent(BaseModel):
    """``start``: the turn got a slot and runs on this provider and model."""

    request_id: str
    conversation_id: str
    provider: str
    model: str


class MessageEvent(BaseModel):
    """``message``: the next piece of the answer's text."""

    text: str


class ToolCallEvent(BaseModel):
    """``tool_call``: the model calls a tool."""

    id: str
    name: str
    arguments: dict[str, Any]


class ToolResultEvent(BaseModel):
    """``tool_result``: what the tool answered."""

    id: str
    name: str
    result: str
    is_error: bool


class ErrorEvent(BaseModel):
    """``error``: the turn failed after the stream began (the stream's last event)."""

    code: str = Field(description="gRPC code in lower case, as in an error body")
    message: str = Field(description="What went wrong, for a human")
    status: int = Field(description="The HTTP status the same failure gets as a plain answer")
    reason: str | None = Field(None, description="The ErrorInfo reason, when the service gave one")
    retry_after_s: float | None = Field(None, description="When to retry, when known")


EVENTS: dict[str, type[BaseModel]] = {
    "queued": QueuedEvent,
    "start": StartEvent,
    "message": MessageEvent,
    "tool_call": ToolCallEvent,
    "tool_result": ToolResultEvent,
    "done": ChatResponse,
    "error": ErrorEvent,
}
"""Each event name and the model of its ``data``."""
