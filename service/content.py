"""The conversation's content: messages made of blocks, and token usage.

These types are shared by the store, the history, the RPC layer, the events
of a turn and the provider bridges, so none of those owns them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal


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
class Usage:
    """Token usage of one model call (cumulative within that call)."""

    input_tokens: int = 0  # not read from or written to a prompt cache
    output_tokens: int = 0
    # Anthropic prompt caching: input written to the cache (billed at 1.25x input)
    # and read from it (0.1x). ``input_tokens`` excludes both, as the API reports.
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_creation_input_tokens + other.cache_creation_input_tokens,
            self.cache_read_input_tokens + other.cache_read_input_tokens,
        )
