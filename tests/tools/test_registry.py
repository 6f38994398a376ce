from __future__ import annotations

import asyncio
from typing import Any

import pytest

from service.providers.base import ToolCall, ToolSpec
from service.tools import Tool, ToolError, ToolRegistry, default_registry, load_tool

from . import sample_tool

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "days": {"type": "integer"},
        "metric": {"type": "boolean"},
        "unit": {"type": "string", "enum": ["C", "F"]},
        "weight": {"type": ["number", "null"]},
    },
    "required": ["city"],
    "additionalProperties": False,
}


def make_tool(
    name: str = "weather",
    handler: Any = None,
    timeout_s: float = 10.0,
    parameters: dict[str, Any] | None = None,
) -> Tool:
    async def echo(arguments: dict[str, Any]) -> str:
        return f"echo {sorted(arguments.items())}"

    return Tool(
        name=name,
        description="test tool",
        parameters=SCHEMA if parameters is None else parameters,
        handler=handler or echo,
        timeout_s=timeout_s,
    )


def call(name: str = "weather", **arguments: Any) -> ToolCall:
    return ToolCall(id="call_1", name=name, arguments=arguments)


async def test_success_returns_handler_string() -> None:
    registry = ToolRegistry([make_tool()])
    result = await registry.run(call(city="Paris", days=3))
    assert not result.is_error
    assert result.content == "echo [('city', 'Paris'), ('days', 3)]"
    assert result.tool_use_id == "call_1"
    assert result.name == "weather"


def test_specs_and_names() -> None:
    registry = ToolRegistry([make_tool("a"), make_tool("b")])
    assert registry.names() == ["a", "b"]
    assert registry.specs() == [
        ToolSpec(name="a", description="test tool", parameters=SCHEMA),
        ToolSpec(name="b", description="test tool", parameters=SCHEMA),
    ]


def test_duplicate_name_is_refused() -> None:
    registry = ToolRegistry([make_tool()])
    with pytest.raises(ValueError, match="already registered"):
        registry.register(make_tool())


@pytest.mark.parametrize("name", ["", "has space", "x" * 65, "dots.not.allowed"])
def test_bad_tool_name_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="tool name"):
        ToolRegistry([make_tool(name)])


def test_non_object_schema_is_refused() -> None:
    with pytest.raises(ValueError, match="type object"):
        ToolRegistry([make_tool(parameters={"type": "string"})])


async def test_unknown_tool_is_an_error_result() -> None:
    registry = ToolRegistry([make_tool()])
    result = await registry.run(call("launch_rockets"))
    assert result.is_error
    assert "launch_rockets" in result.content
    assert "weather" in result.content  # tells the model what exists
    assert result.tool_use_id == "call_1"


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({}, "missing required 'city'"),
        ({"city": 5}, "'city' must be string, got integer"),
        ({"city": "x", "days": "3"}, "'days' must be integer, got string"),
        ({"city": "x", "days": True}, "'days' must be integer, got boolean"),
        ({"city": "x", "days": 2.5}, "'days' must be integer, got number"),
        ({"city": "x", "metric": 1}, "'metric' must be boolean, got integer"),
        ({"city": "x", "unit": "K"}, "'unit' must be one of 'C', 'F'"),
        ({"city": "x", "weight": "heavy"}, "'weight' must be number or null, got string"),
        ({"city": "x", "colour": "red"}, "unknown 'colour'"),
    ],
)
async def test_invalid_arguments_are_error_results(
    arguments: dict[str, Any], expected: str
) -> None:
    ran = False

    async def handler(arguments: dict[str, Any]) -> str:
        nonlocal ran
        ran = True
        return "ran"

    registry = ToolRegistry([make_tool(handler=handler)])
    result = await registry.run(call(**arguments))
    assert result.is_error
    assert expected in result.content
    assert not ran


@pytest.mark.parametrize(
    "arguments",
    [
        {"city": "x", "days": 3.0},  # models often send whole numbers as floats
        {"city": "x", "weight": None},
        {"city": "x", "weight": 70},
        {"city": "x", "unit": "F", "metric": False},
    ],
)
async def test_valid_arguments_pass(arguments: dict[str, Any]) -> None:
    result = await ToolRegistry([make_tool()]).run(call(**arguments))
    assert not result.is_error, result.content


async def test_non_dict_arguments_are_an_error_result() -> None:
    registry = ToolRegistry([make_tool()])
    bad = ToolCall(id="c", name="weather", arguments=["Paris"])  # type: ignore[arg-type]
    result = await registry.run(bad)
    assert result.is_error
    assert "expected a JSON object, got array" in result.content


async def test_slow_tool_times_out() -> None:
    started = asyncio.Event()

    async def slow(arguments: dict[str, Any]) -> str:
        started.set()
        await asyncio.sleep(30)
        return "too late"

    registry = ToolRegistry([make_tool(handler=slow, timeout_s=0.1)])
    result = await asyncio.wait_for(registry.run(call(city="x")), timeout=5)
    assert started.is_set()
    assert result.is_error
    assert "timed out after 0.1 s" in result.content


async def test_registry_timeout_is_a_ceiling() -> None:
    async def slow(arguments: dict[str, Any]) -> str:
        await asyncio.sleep(30)
        return "too late"

    registry = ToolRegistry([make_tool(handler=slow, timeout_s=60)], default_timeout_s=0.1)
    result = await asyncio.wait_for(registry.run(call(city="x")), timeout=5)
    assert result.is_error
    assert "timed out after 0.1 s" in result.content


async def test_timeout_error_raised_by_the_tool_is_not_reported_as_our_timeout() -> None:
    async def flaky(arguments: dict[str, Any]) -> str:
        raise TimeoutError

    result = await ToolRegistry([make_tool(handler=flaky)]).run(call(city="x"))
    assert result.is_error
    assert "timed out after" not in result.content
    assert "timeout inside the tool" in result.content


async def test_handler_exception_is_an_error_result() -> None:
    async def broken(arguments: dict[str, Any]) -> str:
        raise KeyError("boom")

    result = await ToolRegistry([make_tool(handler=broken)]).run(call(city="x"))
    assert result.is_error
    assert result.content == "Tool 'weather' failed: KeyError: 'boom'"


async def test_tool_error_message_is_passed_verbatim() -> None:
    async def refuses(arguments: dict[str, Any]) -> str:
        raise ToolError("City 'x' is not known.")

    result = await ToolRegistry([make_tool(handler=refuses)]).run(call(city="x"))
    assert result.is_error
    assert result.content == "City 'x' is not known."


async def test_non_string_output_is_an_error_result() -> None:
    async def wrong(arguments: dict[str, Any]) -> Any:
        return {"temp": 20}

    result = await ToolRegistry([make_tool(handler=wrong)]).run(call(city="x"))
    assert result.is_error
    assert "returned dict, expected a string" in result.content


async def test_cancellation_propagates() -> None:
    started = asyncio.Event()

    async def slow(arguments: dict[str, Any]) -> str:
        started.set()
        await asyncio.sleep(30)
        return "never"

    registry = ToolRegistry([make_tool(handler=slow)])
    task = asyncio.create_task(registry.run(call(city="x")))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_handler_gets_a_copy_of_the_arguments() -> None:
    async def mutating(arguments: dict[str, Any]) -> str:
        arguments["city"] = "changed"
        return "ok"

    tool_call = call(city="x")
    await ToolRegistry([make_tool(handler=mutating)]).run(tool_call)
    assert tool_call.arguments == {"city": "x"}


# --- loading by import path -------------------------------------------------

MODULE = sample_tool.__name__


def test_load_tool_attribute() -> None:
    assert load_tool(f"{MODULE}:SHOUT") is sample_tool.SHOUT


def test_load_tool_factory() -> None:
    assert load_tool(f"{MODULE}:make_shout") is sample_tool.SHOUT


async def test_loaded_tool_runs_in_default_registry() -> None:
    registry = default_registry([f"{MODULE}:make_shout"])
    assert registry.names() == ["current_time", "calculator", "shout"]
    result = await registry.run(call("shout", text="hi"))
    assert result.content == "HI"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("no_colon_here", "must look like 'package.module:name'"),
        (f"{MODULE}:", "must look like"),
        (":SHOUT", "must look like"),
        ("no_such_package_xyz.mod:tool", "cannot import 'no_such_package_xyz.mod'"),
        (f"{MODULE}:MISSING", "has no attribute 'MISSING'"),
        (f"{MODULE}:NOT_A_TOOL", "is a int, expected a Tool"),
        (f"{MODULE}:make_nothing", "returned str, expected a Tool"),
    ],
)
def test_load_tool_bad_paths(path: str, expected: str) -> None:
    with pytest.raises(ValueError, match="tool import path") as info:
        load_tool(path)
    assert expected in str(info.value)


def test_default_registry_refuses_duplicate_extra_tool() -> None:
    with pytest.raises(ValueError, match="already registered"):
        default_registry([f"{MODULE}:SHOUT", f"{MODULE}:make_shout"])


def test_the_schema_estimate_follows_the_tool_set() -> None:
    # Admission reserves it for every turn, so it is computed once per tool set and
    # must change when an MCP server's tools come or go.
    registry = ToolRegistry()
    assert registry.estimated_tokens() == 0
    registry.register(make_tool("weather"))
    one = registry.estimated_tokens()
    assert one > len(str(SCHEMA)) // 8
    registry.register(make_tool("forecast"))
    assert registry.estimated_tokens() > one
    registry.unregister("forecast")
    assert registry.estimated_tokens() == one
