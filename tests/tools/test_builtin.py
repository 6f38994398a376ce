from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from service.providers.base import ToolCall
from service.tools import ToolRegistry, builtin_tools, default_registry
from service.tools.builtin import current_time_tool

WINTER = datetime(2025, 1, 15, 12, 30, 45, tzinfo=UTC)  # a Wednesday
SUMMER = datetime(2025, 7, 15, 12, 30, 45, tzinfo=UTC)  # a Tuesday


async def ask_time(at: datetime, **arguments: Any) -> tuple[str, bool]:
    registry = ToolRegistry([current_time_tool(clock=lambda: at)])
    result = await registry.run(ToolCall(id="t", name="current_time", arguments=arguments))
    return result.content, result.is_error


@pytest.mark.parametrize(
    ("at", "zone", "expected"),
    [
        (WINTER, "Europe/Paris", "2025-01-15T13:30:45+01:00 (Europe/Paris, Wednesday)"),
        (SUMMER, "Europe/Paris", "2025-07-15T14:30:45+02:00 (Europe/Paris, Tuesday)"),
        (WINTER, "America/New_York", "2025-01-15T07:30:45-05:00 (America/New_York, Wednesday)"),
        (WINTER, "Asia/Kolkata", "2025-01-15T18:00:45+05:30 (Asia/Kolkata, Wednesday)"),
        (WINTER, "Pacific/Kiritimati", "2025-01-16T02:30:45+14:00 (Pacific/Kiritimati, Thursday)"),
        (WINTER, "UTC", "2025-01-15T12:30:45+00:00 (UTC, Wednesday)"),
        (WINTER, "utc", "2025-01-15T12:30:45+00:00 (UTC, Wednesday)"),
    ],
)
async def test_current_time_in_zone(at: datetime, zone: str, expected: str) -> None:
    assert await ask_time(at, timezone=zone) == (expected, False)


async def test_current_time_defaults_to_utc() -> None:
    assert await ask_time(WINTER) == ("2025-01-15T12:30:45+00:00 (UTC, Wednesday)", False)


@pytest.mark.parametrize(
    "zone", ["Mars/Olympus_Mons", "../../etc/passwd", "/etc/localtime", "Europe", "x" * 500]
)
async def test_unknown_zone_is_an_error_naming_it(zone: str) -> None:
    content, is_error = await ask_time(WINTER, timezone=zone)
    assert is_error
    assert "Unknown time zone" in content
    assert zone[:40] in content


async def test_wrong_argument_type_is_an_error() -> None:
    content, is_error = await ask_time(WINTER, timezone=3)
    assert is_error
    assert "'timezone' must be string" in content


async def test_real_clock_is_now() -> None:
    registry = default_registry()
    result = await registry.run(
        ToolCall(id="t", name="current_time", arguments={"timezone": "Asia/Tokyo"})
    )
    assert not result.is_error
    stamp = datetime.fromisoformat(result.content.split(" ")[0])
    assert stamp.utcoffset() == timedelta(hours=9)
    assert abs(stamp - datetime.now(UTC)) < timedelta(minutes=5)


def test_builtin_specs_are_complete_schemas() -> None:
    specs = {spec.name: spec for spec in default_registry().specs()}
    assert set(specs) == {"current_time", "calculator"}
    for spec in specs.values():
        assert spec.description
        assert spec.parameters["type"] == "object"
        assert spec.parameters["properties"]
    assert specs["calculator"].parameters["required"] == ["expression"]


def test_builtin_tools_are_fresh_each_time() -> None:
    # Two registries never share state through module-level tool objects.
    assert builtin_tools()[0] is not builtin_tools()[0]


def test_default_registry_rejects_bad_timeout() -> None:
    with pytest.raises(ValueError, match="default_timeout_s"):
        default_registry(timeout_s=0)
