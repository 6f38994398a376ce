"""The provider interface: normalized messages in, normalized events out.

Bridges translate between these types and one vendor's wire format; nothing
vendor-specific crosses this module's types.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

# --- conversation content -------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextBlock:
    """Plain text."""

    text: str
    type: Literal["text"] = "text"


@dataclass(frozen=True, slots=True)
class ToolUseBlock:
    """The model asked to call a tool (assistant turns)."""

    id: str
    name: str
    input: dict[str, Any]
    type: Literal["tool_use"] = "tool_use"


@dataclass(frozen=True, slots=True)
class ToolResultBlock:
    """The result of a tool call, sent back to the model (user turns)."""

    tool_use_id: str
    content: str
    is_error: bool = False
    # The tool's name: Ollama's wire format names the tool instead of the call id.
    name: str = ""
    type: Literal["tool_result"] = "tool_result"


Block = TextBlock | ToolUseBlock | ToolResultBlock


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of the conversation as sent to a provider."""

    role: Literal["user", "assistant"]
    content: Sequence[Block]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool offered to the model: name, description and JSON-schema parameters."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    """Everything a provider needs for one model call."""

    messages: Sequence[Message]
    system: str | None = None
    tools: Sequence[ToolSpec] = ()
    max_tokens: int = 1024
    model: str | None = None  # None: the bridge's configured model
    user_id: str | None = None  # forwarded where the vendor supports it (metadata)


# --- stream events ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of generated text."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A complete tool call with parsed arguments."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage of one model call (cumulative within that call)."""

    input_tokens: int = 0
    output_tokens: int = 0


StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal", "other"]


@dataclass(frozen=True, slots=True)
class Stop:
    """The model call finished normally; always the last event of a stream."""

    reason: StopReason


ProviderEvent = TextDelta | ToolCall | Usage | Stop


@dataclass(frozen=True, slots=True)
class ProviderHealth:
    """What GetStatus reports about a provider."""

    reachable: bool
    detail: str
    version: str = ""
    model_available: bool | None = None


@dataclass(slots=True)
class AssistantTurn:
    """The final assistant message, folded from a provider's events."""

    text_parts: list[str] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    stop_reason: StopReason | None = None

    @property
    def text(self) -> str:
        return "".join(self.text_parts)


class Provider(Protocol):
    """A streaming LLM backend.

    ``stream`` yields TextDelta / ToolCall / Usage events and ends with exactly
    one Stop; any failure raises ``service.errors.ProviderError`` (or
    DeadlineExceeded). Cancelling the consuming task closes the upstream
    connection.
    """

    name: str
    model: str

    def stream(self, request: CompletionRequest) -> AsyncIterator[ProviderEvent]: ...

    async def probe(self) -> ProviderHealth: ...

    async def aclose(self) -> None: ...
