"""Ollama's /api/chat wire format: our messages and tools in; stop reasons, model names out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from service.content import Message, TextBlock, ToolResultBlock, ToolUseBlock
from service.providers.base import CompletionRequest, StopReason


def chat_messages(request: CompletionRequest) -> list[dict[str, Any]]:
    """Our messages in Ollama's format: a leading system message, tool results as role "tool"."""
    out: list[dict[str, Any]] = []
    if request.system:
        out.append({"role": "system", "content": request.system})
    tool_names: dict[str, str] = {}
    for message in request.messages:
        out.extend(_translate(message, tool_names))
    return out


def _translate(message: Message, tool_names: dict[str, str]) -> list[dict[str, Any]]:
    # Ollama takes one string per message: separate texts stay separate paragraphs.
    text = "\n\n".join(b.text for b in message.content if isinstance(b, TextBlock) and b.text)
    if message.role == "assistant":
        uses = [b for b in message.content if isinstance(b, ToolUseBlock)]
        entry: dict[str, Any] = {"role": "assistant", "content": text}
        if uses:
            tool_names.update((u.id, u.name) for u in uses)
            entry["tool_calls"] = [
                {"function": {"name": u.name, "arguments": u.input}} for u in uses
            ]
        return [entry]
    out: list[dict[str, Any]] = []
    for block in message.content:
        if isinstance(block, ToolResultBlock):
            # Ollama pairs a result with its call by tool name, and has no error flag.
            content = f"error: {block.content}" if block.is_error else block.content
            name = block.name or tool_names.get(block.tool_use_id, "")
            out.append({"role": "tool", "content": content, "tool_name": name})
    if text or not out:
        out.append({"role": "user", "content": text})
    return out


def chat_payload(
    request: CompletionRequest, model: str, keep_alive: str | None = None
) -> dict[str, Any]:
    """The /api/chat body; ``stream`` is always explicit (omitted would also mean true)."""
    payload: dict[str, Any] = {
        "model": model,
        "messages": chat_messages(request),
        "stream": True,
        "options": {"num_predict": request.max_tokens},
    }
    if request.tools:
        payload["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters,
                },
            }
            for t in request.tools
        ]
    if keep_alive is not None:
        payload["keep_alive"] = keep_alive
    return payload


def stop_reason(done_reason: object, called_tools: bool) -> StopReason:
    """Our stop reason for the done line's ``done_reason``."""
    if done_reason in (None, "", "stop"):
        return "tool_use" if called_tools else "end_turn"
    if done_reason == "length":
        return "max_tokens"
    return "other"


def canonical(name: str) -> str:
    """A model name as Ollama lists it: ``llama3.2`` is ``llama3.2:latest``."""
    return name if ":" in name else f"{name}:latest"


def model_names(models: Sequence[Any]) -> set[str]:
    """The canonical names of the entries of /api/tags or /api/ps."""
    names: set[str] = set()
    for entry in models:
        if isinstance(entry, dict):
            for key in ("name", "model"):
                if entry.get(key):
                    names.add(canonical(str(entry[key])))
    return names
