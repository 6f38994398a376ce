"""A tool defined outside the service, loaded by import path in the tests."""

from __future__ import annotations

from typing import Any

from service.tools import Tool


async def _shout(arguments: dict[str, Any]) -> str:
    return str(arguments["text"]).upper()


SHOUT = Tool(
    name="shout",
    description="Upper-case a text.",
    parameters={
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
    },
    handler=_shout,
)


def make_shout() -> Tool:
    return SHOUT


def make_nothing() -> str:
    return "not a tool"


NOT_A_TOOL = 42
