"""What MCP tools look like to the model: offered names, schemas and result text.

An MCP server names its tools freely and answers with content blocks of
several kinds; the model sees one provider-safe name per tool and one string
per result. Nothing here talks to a server.
"""

from __future__ import annotations

import json
import re
from typing import Any

from mcp import types

# The registry's rule for tool names (Anthropic's limit): the offered name must fit it.
_MAX_NAME = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
# A result this long would crowd the conversation out of the model's context.
MAX_RESULT_CHARS = 50_000
SEPARATOR = "__"


def offered_name(server: str, tool: str) -> str:
    """``<server>__<tool>``, with characters providers refuse replaced by ``_``."""
    return f"{server}{SEPARATOR}{_UNSAFE.sub('_', tool)}"[:_MAX_NAME]


def input_schema(tool: types.Tool) -> dict[str, Any]:
    """The tool's JSON schema as the registry wants it: an object schema."""
    schema = dict(tool.input_schema or {})
    if schema.get("type") != "object":
        # MCP requires an object root; a server that leaves "type" out still
        # means one, and anything else cannot take named arguments.
        schema = {"type": "object", "properties": schema.get("properties") or {}}
    return schema


def description(server: str, tool: types.Tool) -> str:
    text = tool.description or tool.title or f"The {tool.name!r} tool"
    return f"{text} (from the MCP server {server!r})"


def result_text(result: types.CallToolResult) -> str:
    """The result as one string: text as is, every other kind of content described."""
    parts = [_describe(block) for block in result.content]
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    return clip("\n".join(parts))


def clip(text: str) -> str:
    """``text`` cut to MAX_RESULT_CHARS, saying how much was left out (results and errors)."""
    if len(text) <= MAX_RESULT_CHARS:
        return text
    cut = len(text) - MAX_RESULT_CHARS
    return f"{text[:MAX_RESULT_CHARS]}\n[... {cut} more characters not shown]"


def _describe(block: object) -> str:
    if isinstance(block, types.TextContent):
        return block.text
    if isinstance(block, types.ImageContent):
        return f"[image content: {block.mime_type}, {_decoded_size(block.data)} bytes, not shown]"
    if isinstance(block, types.AudioContent):
        return f"[audio content: {block.mime_type}, {_decoded_size(block.data)} bytes, not shown]"
    if isinstance(block, types.ResourceLink):
        kind = f", {block.mime_type}" if block.mime_type else ""
        return f"[resource link: {block.uri} ({block.name}{kind})]"
    if isinstance(block, types.EmbeddedResource):
        resource = block.resource
        if isinstance(resource, types.TextResourceContents):
            return f"[resource {resource.uri}]\n{resource.text}"
        mime = resource.mime_type or "binary"
        size = _decoded_size(resource.blob)
        return f"[resource {resource.uri}: {mime}, {size} bytes, not shown]"
    kind = getattr(block, "type", type(block).__name__)
    return f"[{kind} content, not shown]"


def _decoded_size(data: str) -> int:
    # Base64 carries 3 bytes in every 4 characters, less the padding.
    return max(0, len(data) * 3 // 4 - data[-2:].count("="))
