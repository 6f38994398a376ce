"""What a chat turn produces, in the service's own terms (no protobuf here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from service.content import Usage
from service.providers.base import TextDelta


@dataclass(frozen=True, slots=True)
class TurnInput:
    """One chat request, already authenticated: the user is known."""

    user_id: str
    message: str
    conversation_id: str = ""
    new_conversation: bool = False
    priority: int = 5
    provider: str = ""
    model: str = ""
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class Queued:
    """Waiting for a provider slot; sent again when the position changes."""

    request_id: str
    position: int
    estimated_wait_s: float


@dataclass(frozen=True, slots=True)
class Started:
    """The answer begins."""

    request_id: str
    conversation_id: str
    provider: str
    model: str


@dataclass(frozen=True, slots=True)
class ToolCalled:
    """The model asked for a tool."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolReturned:
    """A tool finished."""

    id: str
    name: str
    result: str
    is_error: bool


@dataclass(frozen=True, slots=True)
class ToolRecord:
    """A tool call of the turn with its result, for the final answer."""

    id: str
    name: str
    arguments: dict[str, Any]
    result: str
    is_error: bool


@dataclass(frozen=True, slots=True)
class TurnResult:
    """The finished turn; always the last event."""

    response: str
    conversation_id: str
    request_id: str
    usage: Usage
    provider: str
    model: str
    stop_reason: str
    tool_calls: tuple[ToolRecord, ...] = field(default_factory=tuple)


ChatEvent = Queued | Started | TextDelta | ToolCalled | ToolReturned | TurnResult
