"""Our requests as Messages API params, prompt-cache breakpoints, and its usage as ours.

Pure translation for ``AnthropicBridge``: no I/O, no SDK client.
"""

from __future__ import annotations

from anthropic.types import (
    CacheControlEphemeralParam,
    MessageDeltaUsage,
    MessageParam,
    TextBlockParam,
    ToolParam,
    ToolResultBlockParam,
    ToolUseBlockParam,
)

from service.content import Message, TextBlock, ToolUseBlock, Usage
from service.providers.base import CompletionRequest

Block = TextBlockParam | ToolUseBlockParam | ToolResultBlockParam


def _blocks(message: Message) -> list[Block]:
    blocks: list[Block] = []
    for block in message.content:
        if isinstance(block, TextBlock):
            if block.text:  # the API rejects empty text blocks
                blocks.append({"type": "text", "text": block.text})
        elif isinstance(block, ToolUseBlock):
            blocks.append(
                {"type": "tool_use", "id": block.id, "name": block.name, "input": dict(block.input)}
            )
        else:
            result: ToolResultBlockParam = {
                "type": "tool_result",
                "tool_use_id": block.tool_use_id,
                "content": block.content,
            }
            if block.is_error:
                result["is_error"] = True
            blocks.append(result)
    return blocks


def message_params(request: CompletionRequest) -> list[MessageParam]:
    """Our messages as Messages API params (blocks map one to one)."""
    out: list[MessageParam] = []
    for message in request.messages:
        if message.role == "assistant":
            out.append({"role": "assistant", "content": _blocks(message)})
        else:
            out.append({"role": "user", "content": _blocks(message)})
    return out


def tool_params(request: CompletionRequest) -> list[ToolParam]:
    return [
        {"name": t.name, "description": t.description, "input_schema": t.parameters}
        for t in request.tools
    ]


def updated_usage(usage: Usage, delta: MessageDeltaUsage) -> Usage:
    """``message_delta``'s usage is cumulative; a field it leaves out (None) stays as it was."""
    return Usage(
        usage.input_tokens if delta.input_tokens is None else delta.input_tokens,
        delta.output_tokens,
        usage.cache_creation_input_tokens
        if delta.cache_creation_input_tokens is None
        else delta.cache_creation_input_tokens,
        usage.cache_read_input_tokens
        if delta.cache_read_input_tokens is None
        else delta.cache_read_input_tokens,
    )


_EPHEMERAL: CacheControlEphemeralParam = {"type": "ephemeral"}


def cache_breakpoints(
    system: list[TextBlockParam], tools: list[ToolParam], messages: list[MessageParam]
) -> None:
    """Mark (in place) where the prompt cache should end: at most three of the four allowed.

    1. After the stable head: the system prompt, or the last tool when there is
       none (the cached prefix runs tools, then system, then messages). It is
       what still hits right after the history window was cut.
    2. The last block of the last message: the next call of this conversation
       (the next tool round, the next turn) starts with this whole prompt and
       reads it from the cache.
    3. The last block of the user message before the newest one: where the
       previous turn's call put breakpoint 2. The API looks back only about 20
       blocks from a breakpoint for a hit, so a turn that added more blocks
       than that would otherwise miss what its predecessor wrote.
    Explicit breakpoints, not the request-level automatic one: that one marks
    only the last block, so after a cut even the system prompt would be re-written.
    """
    if system:
        system[-1]["cache_control"] = _EPHEMERAL
    elif tools:
        tools[-1]["cache_control"] = _EPHEMERAL
    marked = messages[-1:] + [m for m in messages[:-1] if m["role"] == "user"][-1:]
    for message in marked:
        content = message["content"]
        if isinstance(content, list) and content:
            content[-1]["cache_control"] = _EPHEMERAL
