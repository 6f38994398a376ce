"""The provider interface: normalized messages in, normalized events out.

Bridges translate between these types and one vendor's wire format; nothing
vendor-specific crosses this module's types.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from service.content import Message, Usage


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
    # False: a one-off call (a history summary) that no later call repeats, so writing
    # its prompt to a provider's cache would only cost (Anthropic bills writes at 1.25x).
    cacheable: bool = True


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


@dataclass(frozen=True, slots=True)
class HostInventory:
    """What one model host holds: the models installed and the ones loaded in memory."""

    loaded: frozenset[str]
    installed: frozenset[str] | None = None  # None when not asked for


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

    def stream(self, request: CompletionRequest) -> AsyncGenerator[ProviderEvent, None]: ...

    async def probe(self) -> ProviderHealth: ...

    async def aclose(self) -> None: ...
