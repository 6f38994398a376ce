"""The tool registry: named async tools, argument checks, and safe execution.

``ToolRegistry.run`` never raises for anything a tool or the model does
wrong; every failure becomes an error ``ToolResultBlock`` the model can read,
so one bad tool call cannot fail a whole request.
"""

from __future__ import annotations

import asyncio
import importlib
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from service.content import ToolResultBlock
from service.history import estimate_tool_tokens
from service.providers.base import ToolCall, ToolSpec

ToolHandler = Callable[[dict[str, Any]], Awaitable[str]]

# Anthropic's limit on tool names; Ollama accepts anything, so the stricter rule wins.
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")

# JSON-schema type name -> Python types accepted for it (bool is excluded from numbers below).
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list, tuple),
    "null": (type(None),),
}


class ToolError(Exception):
    """Raised by a handler to report a failure whose message is shown to the model verbatim."""


@dataclass(frozen=True)
class Tool:
    """An async tool the model may call, with JSON-schema parameters (type object)."""

    name: str
    description: str
    parameters: dict[str, Any]
    handler: ToolHandler
    timeout_s: float = 10.0

    def spec(self) -> ToolSpec:
        return ToolSpec(name=self.name, description=self.description, parameters=self.parameters)


class ToolRegistry:
    """The tools offered to the model, and the one place where they are run.

    A tool runs for at most ``min(tool.timeout_s, default_timeout_s)``: the
    registry's timeout is the operator's ceiling, a tool may only ask for less.
    """

    def __init__(self, tools: Iterable[Tool] = (), default_timeout_s: float = 10.0) -> None:
        if default_timeout_s <= 0:
            raise ValueError(f"default_timeout_s must be positive, got {default_timeout_s}")
        self._tools: dict[str, Tool] = {}
        self._default_timeout_s = default_timeout_s
        self._estimate: int | None = None  # of the schemas; None: the tool set changed
        for tool in tools:
            self.register(tool)

    def register(self, tool: Tool) -> None:
        if not _TOOL_NAME.fullmatch(tool.name):
            raise ValueError(f"tool name {tool.name!r} must match [A-Za-z0-9_-]{{1,64}}")
        if tool.name in self._tools:
            raise ValueError(f"a tool named {tool.name!r} is already registered")
        if not isinstance(tool.parameters, dict) or tool.parameters.get("type") != "object":
            raise ValueError(f"tool {tool.name!r}: parameters must be a JSON schema of type object")
        if tool.timeout_s <= 0:
            raise ValueError(f"tool {tool.name!r}: timeout_s must be positive")
        self._tools[tool.name] = tool
        self._estimate = None

    def unregister(self, name: str) -> None:
        """Remove a tool (one a dynamic source such as an MCP server no longer lists)."""
        if self._tools.pop(name, None) is not None:
            self._estimate = None

    def specs(self) -> list[ToolSpec]:
        return [tool.spec() for tool in self._tools.values()]

    def estimated_tokens(self) -> int:
        """The tokens the tools' schemas add to every model call (estimated once per set)."""
        if self._estimate is None:
            self._estimate = sum(
                estimate_tool_tokens(t.name, t.description, t.parameters)
                for t in self._tools.values()
            )
        return self._estimate

    def names(self) -> list[str]:
        return list(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    async def run(self, call: ToolCall) -> ToolResultBlock:
        """Run one tool call; failures come back as an error result, never as an exception."""

        def failed(text: str) -> ToolResultBlock:
            return ToolResultBlock(tool_use_id=call.id, name=call.name, content=text, is_error=True)

        tool = self._tools.get(call.name)
        if tool is None:
            known = ", ".join(sorted(self._tools)) or "none"
            return failed(f"Unknown tool {call.name!r}. Available tools: {known}.")
        problem = argument_problem(tool.parameters, call.arguments)
        if problem is not None:
            return failed(f"Invalid arguments for tool {call.name!r}: {problem}.")

        limit = min(tool.timeout_s, self._default_timeout_s)
        try:
            async with asyncio.timeout(limit) as deadline:
                output = await tool.handler(dict(call.arguments))
        except ToolError as exc:
            return failed(str(exc) or f"Tool {call.name!r} failed.")
        except TimeoutError:
            if deadline.expired():
                return failed(f"Tool {call.name!r} timed out after {limit:g} s.")
            return failed(f"Tool {call.name!r} failed: a timeout inside the tool.")
        except Exception as exc:
            # Any other exception is a bug or an outage in the tool; the model
            # gets the exception type and text, the request carries on.
            return failed(f"Tool {call.name!r} failed: {type(exc).__name__}: {exc}")
        if not isinstance(output, str):
            return failed(
                f"Tool {call.name!r} returned {type(output).__name__}, expected a string."
            )
        return ToolResultBlock(tool_use_id=call.id, name=call.name, content=output)


def argument_problem(schema: dict[str, Any], arguments: object) -> str | None:
    """Check arguments against the basic parts of an object schema; None when they fit.

    Covers what models get wrong in practice: missing required keys, unknown
    keys when ``additionalProperties`` is false, wrong JSON types and values
    outside an ``enum``. Nested schemas are checked one level deep.
    """
    if not isinstance(arguments, dict):
        return f"expected a JSON object, got {_json_type_name(arguments)}"
    properties: dict[str, Any] = schema.get("properties") or {}
    missing = [key for key in schema.get("required") or () if key not in arguments]
    if missing:
        return "missing required " + ", ".join(repr(key) for key in missing)
    if schema.get("additionalProperties") is False:
        unknown = [key for key in arguments if key not in properties]
        if unknown:
            allowed = ", ".join(repr(key) for key in properties) or "none"
            return f"unknown {', '.join(repr(k) for k in unknown)} (allowed: {allowed})"
    for key, value in arguments.items():
        prop = properties.get(key)
        if isinstance(prop, dict):
            problem = _value_problem(prop, value)
            if problem is not None:
                return f"{key!r} {problem}"
    return None


def _value_problem(schema: dict[str, Any], value: object) -> str | None:
    declared = schema.get("type")
    if declared is not None:
        names = [declared] if isinstance(declared, str) else list(declared)
        if not any(_has_json_type(value, name) for name in names):
            return f"must be {' or '.join(names)}, got {_json_type_name(value)}"
    enum = schema.get("enum")
    if isinstance(enum, list) and value not in enum:
        return f"must be one of {', '.join(repr(v) for v in enum)}"
    return None


def _has_json_type(value: object, name: str) -> bool:
    accepted = _JSON_TYPES.get(name)
    if accepted is None:
        return True  # a type this check does not know: let the tool judge
    if isinstance(value, bool) and name != "boolean":
        return False
    if name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, accepted)


def _json_type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def load_tool(import_path: str) -> Tool:
    """Load a tool from ``"package.module:attribute"``.

    The attribute is a ``Tool`` or a zero-argument callable returning one.
    Any problem is a ValueError saying what is wrong with the path.
    """
    module_name, sep, attribute = import_path.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"tool import path {import_path!r} must look like 'package.module:name'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(
            f"tool import path {import_path!r}: cannot import {module_name!r}: {exc}"
        ) from exc
    target: object = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ValueError(
                f"tool import path {import_path!r}: {module_name!r} has no attribute {attribute!r}"
            ) from None
    if isinstance(target, Tool):
        return target
    if callable(target):
        try:
            made = target()
        except Exception as exc:
            raise ValueError(
                f"tool import path {import_path!r}: calling {attribute!r} failed: {exc}"
            ) from exc
        if isinstance(made, Tool):
            return made
        raise ValueError(
            f"tool import path {import_path!r}: calling {attribute!r} returned "
            f"{type(made).__name__}, expected a Tool"
        )
    raise ValueError(
        f"tool import path {import_path!r}: {attribute!r} is a {type(target).__name__}, "
        "expected a Tool or a function returning one"
    )
