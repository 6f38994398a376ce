"""The service's log setup: JSON lines with the call's fields; content loggers held back."""

from __future__ import annotations

import contextvars
import io
import json
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from service.auth import Principal
from service.context import Call, enter_call
from service.observability import logs


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    levels = {n: logging.getLogger(n).level for n in (*logs.CONTENT_LOGGERS, *logs.CHATTY_LOGGERS)}
    yield
    root.handlers[:], root.level = saved
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_json_lines_carry_the_calls_request_id_user_and_method(restore_logging: None) -> None:
    logs.configure_logging("info", "json")
    stream = io.StringIO()
    logging.getLogger().handlers[0].setStream(stream)  # type: ignore[attr-defined]
    enter_call(Call("/agent.v1.AgentService/Chat", Principal("open"), "rid-1", "alice"))
    logging.getLogger("service.test").info("something happened", extra={"code": "OK"})
    record = json.loads(stream.getvalue().splitlines()[-1])
    assert record["message"] == "something happened" and record["level"] == "info"
    stamp = datetime.fromisoformat(record["timestamp"])
    assert stamp.utcoffset() == timedelta(0)  # ISO 8601, UTC, as the gateway writes it
    assert record["request_id"] == "rid-1" and record["user"] == "alice"
    assert record["method"] == "/agent.v1.AgentService/Chat" and record["code"] == "OK"
    assert record["logger"] == "service.test" and "timestamp" in record


def test_a_line_outside_a_call_or_without_a_user_leaves_those_fields_out(
    restore_logging: None,
) -> None:
    logs.configure_logging("info", "json")
    stream = io.StringIO()
    logging.getLogger().handlers[0].setStream(stream)  # type: ignore[attr-defined]
    log = logging.getLogger("service.test")

    def in_a_call_without_a_user() -> None:
        enter_call(Call("/agent.v1.AgentService/GetStatus", Principal("open"), "rid-2"))
        log.info("no user yet")

    # Fresh contexts: no call of another test is current.
    contextvars.Context().run(log.info, "starting")
    contextvars.Context().run(in_a_call_without_a_user)
    outside, anonymous = (json.loads(line) for line in stream.getvalue().splitlines()[-2:])
    assert outside["request_id"] == "-" and "user" not in outside and "method" not in outside
    assert "user" not in anonymous and anonymous["method"] == "/agent.v1.AgentService/GetStatus"


def test_debug_does_not_open_the_loggers_that_print_request_bodies(restore_logging: None) -> None:
    logs.configure_logging("debug", "text")
    assert logging.getLogger("anthropic").getEffectiveLevel() == logging.INFO
    assert logging.getLogger("httpx").getEffectiveLevel() == logging.WARNING
    logs.configure_logging("debug", "text", include_content=True)
    assert logging.getLogger("anthropic").getEffectiveLevel() == logging.DEBUG
