"""The built-in tools (current time, calculator) and the default registry."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from service.tools.calculator import CalculationError, evaluate, format_number
from service.tools.registry import Tool, ToolError, ToolRegistry, load_tool

Clock = Callable[[], datetime]

_MAX_ZONE_CHARS = 64


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _zone(name: str) -> ZoneInfo:
    # Runs in a thread: the first lookup of a zone reads the tz database from disk.
    return ZoneInfo(name)


def current_time_tool(clock: Clock = _utc_now) -> Tool:
    """The ``current_time`` tool; ``clock`` returns an aware datetime (tests pin it)."""

    async def current_time(arguments: dict[str, Any]) -> str:
        name = arguments.get("timezone") or "UTC"
        if name.upper() in ("UTC", "Z"):
            name = "UTC"
        if len(name) > _MAX_ZONE_CHARS:
            raise ToolError(f"Unknown time zone {name[:_MAX_ZONE_CHARS]!r}...")
        try:
            zone = await asyncio.to_thread(_zone, name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ToolError(
                f"Unknown time zone {name!r}; use an IANA name such as 'Europe/Paris' or 'UTC'."
            ) from None
        now = clock().astimezone(zone)
        return f"{now.isoformat(timespec='seconds')} ({name}, {now:%A})"

    return Tool(
        name="current_time",
        description=(
            "Get the current date and time (ISO-8601 with UTC offset) in a time zone. "
            "Use this whenever the answer depends on today's date or the time of day."
        ),
        parameters={
            "type": "object",
            "properties": {
                "timezone": {
                    "type": "string",
                    "description": "IANA time zone name, e.g. 'Europe/Paris'. Default: UTC.",
                }
            },
            "additionalProperties": False,
        },
        handler=current_time,
    )


def calculator_tool() -> Tool:
    """The ``calculator`` tool: exact arithmetic, evaluated safely (no eval)."""

    async def calculator(arguments: dict[str, Any]) -> str:
        expression: str = arguments["expression"]
        try:
            return format_number(evaluate(expression))
        except CalculationError as exc:
            raise ToolError(f"Cannot evaluate {expression[:80]!r}: {exc}.") from None

    return Tool(
        name="calculator",
        description=(
            "Evaluate an arithmetic expression exactly. Supports numbers, + - * / // % ** "
            "and parentheses, the functions sqrt, sin, cos, tan, log (natural, or log(x, base)), "
            "log10, exp, abs, round, floor, ceil and the constants pi and e. "
            "Use it for any calculation instead of computing in your head."
        ),
        parameters={
            "type": "object",
            "properties": {
                "expression": {
                    "type": "string",
                    "description": "The expression, e.g. '(3 + 4) * sqrt(2) / 7'.",
                }
            },
            "required": ["expression"],
            "additionalProperties": False,
        },
        handler=calculator,
    )


def builtin_tools() -> list[Tool]:
    """Fresh instances of every built-in tool."""
    return [current_time_tool(), calculator_tool()]


def default_registry(
    extra_import_paths: Sequence[str] = (), timeout_s: float = 10.0
) -> ToolRegistry:
    """The built-in tools plus those named by import path in the configuration.

    Raises ValueError for an import path that does not load or a duplicate name.
    """
    registry = ToolRegistry(builtin_tools(), default_timeout_s=timeout_s)
    for path in extra_import_paths:
        registry.register(load_tool(path))
    return registry
