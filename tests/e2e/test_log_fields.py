"""Both processes' JSON log lines carry exactly the fields docs/operations.md lists.

The table under "## Logs" is read from the document itself: each field says
whether it is on every line, on every line of named loggers, or only when
something holds; a line with a field the table lacks, without one it
requires, or with one that is empty fails. One stack with ``logging.format:
json`` at info; every line either process writes, start to stop, is read
back. A provider failure is one warning naming its reason, URL and model;
readiness probes write nothing at info.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.e2e.queue_helpers import wait_until
from tests.e2e.stack import ROOT, Stack, launch, provider_config
from tests.fakes.ollama import FakeOllama
from tests.fakes.script import Reply
from tests.gateway_http import gateway_get

DOCS = ROOT / "docs" / "operations.md"
LEVELS = {"debug", "info", "warning", "error", "critical"}
ANSI = re.compile(r"\x1b\[")
_ROW = re.compile(r"^\| `(\w+)` \| ([^|]+) \| [^|]+ \|$")


@dataclass(frozen=True)
class LogField:
    """One row of the docs' table: where the field is."""

    every_line: bool
    loggers: frozenset[str]  # every line of these loggers has it
    conditional: bool  # other lines may have it, when the row's condition holds


def documented_fields(text: str) -> dict[str, LogField]:
    """The field table of the document's "Logs" section."""
    section = text.split("\n## Logs\n", 1)[1].split("\n## ", 1)[0]
    fields = {}
    for line in section.splitlines():
        match = _ROW.match(line)
        if match:
            name, on = match.groups()
            always, when, _ = on.partition("when")
            fields[name] = LogField(
                on.strip() == "every line",
                frozenset(re.findall(r"`([\w.]+)`", always)),
                bool(when),
            )
    return fields


def field_problems(record: dict[str, Any], fields: dict[str, LogField]) -> list[str]:
    """How one JSON line differs from the table ([] when it does not)."""
    logger = record.get("logger", "")
    out = [
        f"no {name}"
        for name, field in fields.items()
        if (field.every_line or logger in field.loggers) and name not in record
    ]
    for key, value in record.items():
        field = fields.get(key)
        if field is None:
            out.append(f"{key} is not documented")
        elif not (field.every_line or logger in field.loggers or field.conditional):
            out.append(f"{key} is documented for other loggers only")
        elif value in ("", None):
            out.append(f"{key} is empty")
    return out


FIELDS = documented_fields(DOCS.read_text())


def test_the_table_is_read() -> None:
    every = {name for name, field in FIELDS.items() if field.every_line}
    assert every == {"timestamp", "level", "logger", "message", "request_id"}
    assert FIELDS["rpc"].loggers == {"service.access"} and not FIELDS["rpc"].conditional
    assert FIELDS["method"].loggers == {"service.access", "gateway.access"}
    assert FIELDS["method"].conditional and FIELDS["user"].conditional
    assert not FIELDS["user"].loggers


def test_the_check_finds_a_missing_an_empty_and_an_undocumented_field() -> None:
    good = {
        "timestamp": "t",
        "level": "info",
        "logger": "service.access",
        "message": "m",
        "request_id": "-",
        "method": "/agent.v1.AgentService/Chat",
        "rpc": "Chat",
        "code": "OK",
        "duration_ms": 1.0,
    }
    assert field_problems(good, FIELDS) == []
    assert field_problems({**good, "user": ""}, FIELDS) == ["user is empty"]
    assert field_problems({**good, "color_message": "x"}, FIELDS) == [
        "color_message is not documented"
    ]
    gateway_line = {**good, "logger": "gateway.drain"}
    assert field_problems(gateway_line, FIELDS) == [
        "rpc is documented for other loggers only",
        "code is documented for other loggers only",
        "duration_ms is documented for other loggers only",
    ]
    del good["rpc"]
    assert field_problems(good, FIELDS) == ["no rpc"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, fake_ollama: FakeOllama) -> Iterator[Stack]:
    config = provider_config("ollama", fake_ollama, None)
    config["logging"] = {"format": "json"}
    config["api_server"] = {"log_level": "info"}
    stack = launch(tmp_path_factory.mktemp("log-fields"), config)
    yield stack
    stack.stop()


def _records(log: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.splitlines() if line.strip()]


def _logs(stack: Stack) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    assert stack.service is not None and stack.gateway is not None
    return _records(stack.service.log()), _records(stack.gateway.log())


def _assert_documented(stack: Stack) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Both processes' lines so far, each checked against the table."""
    logs = _logs(stack)
    for process, records in zip(("service", "gateway"), logs, strict=True):
        assert records, process
        for record in records:
            where = (process, record)
            assert field_problems(record, FIELDS) == [], where
            stamp = datetime.fromisoformat(record["timestamp"])
            assert stamp.utcoffset() == timedelta(0), where
            assert record["level"] in LEVELS, where
            assert isinstance(record["message"], str), where
            assert not ANSI.search(json.dumps(record)), where
    return logs


def test_every_line_of_both_processes_has_the_documented_fields(
    stack: Stack, client: httpx.Client
) -> None:
    rid = f"fields-{uuid.uuid4().hex[:8]}"
    reply = client.post(
        "/api/chat", json={"message": "hi", "user_id": "logs"}, headers={"X-Request-ID": rid}
    )
    assert reply.status_code == 200, reply.text
    # A request that names no user: its gateway line has none.
    bare = client.get("/api/status", headers={"X-Request-ID": f"{rid}-bare"})
    assert bare.status_code == 200, bare.text
    wait_until(
        lambda: all(any(r["request_id"] == f"{rid}-bare" for r in p) for p in _logs(stack)),
        "lines",
    )
    service, gateway = _assert_documented(stack)
    [rpc] = [r for r in service if r["request_id"] == rid and r.get("rpc") == "Chat"]
    assert (rpc["logger"], rpc["user"], rpc["code"]) == ("service.access", "logs", "OK")
    assert rpc["method"] == "/agent.v1.AgentService/Chat"
    [access] = [r for r in gateway if r["request_id"] == rid and r["logger"] == "gateway.access"]
    assert (access["status"], access["route"], access["user"]) == (200, "/api/chat", "logs")
    [bare_line] = [r for r in gateway if r["request_id"] == f"{rid}-bare"]
    assert "user" not in bare_line and bare_line["method"] == "GET"
    # Lines about no request: no user, and on the service no method.
    started = [r for r in service if r["request_id"] == "-"]
    assert started and all("user" not in r and "method" not in r for r in started)
    assert any(r["logger"] == "uvicorn.error" for r in gateway)


def test_a_provider_failure_is_one_warning_with_reason_url_and_model(
    stack: Stack, client: httpx.Client, fake_ollama: FakeOllama
) -> None:
    rid = f"busy-{uuid.uuid4().hex[:8]}"
    fake_ollama.push(Reply(status=503, error_message="server busy"))
    reply = client.post(
        "/api/chat", json={"message": "hi", "user_id": "logs"}, headers={"X-Request-ID": rid}
    )
    assert reply.status_code == 503, reply.text

    def warnings() -> list[dict[str, Any]]:
        return [r for r in _logs(stack)[0] if r["request_id"] == rid and r["level"] == "warning"]

    wait_until(warnings, "the provider warning")
    [warning] = warnings()
    assert warning["reason"] == "PROVIDER_OVERLOADED"
    assert warning["url"].rstrip("/") == fake_ollama.url.rstrip("/")
    assert warning["model"] == "llama3.2" and warning["provider"] == "ollama"
    for field in ("PROVIDER_OVERLOADED", warning["url"], "llama3.2"):
        assert field in warning["message"]


def _status_lines(stack: Stack) -> list[dict[str, Any]]:
    service = _logs(stack)[0]
    return [r for r in service if r.get("rpc") == "GetStatus" and r["level"] != "debug"]


def test_readiness_probes_write_nothing_at_info(stack: Stack) -> None:
    before = len(_status_lines(stack))
    rids = [f"probe-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    for rid in rids:
        ready = gateway_get(f"{stack.url}/health/ready", headers={"X-Request-ID": rid}, timeout=10)
        assert ready.status_code == 200, ready.text
    # A later request's lines are out, so the probes' would be too.
    marker = f"after-{uuid.uuid4().hex[:8]}"
    status = gateway_get(f"{stack.url}/api/status", headers={"X-Request-ID": marker}, timeout=10)
    assert status.status_code == 200
    wait_until(
        lambda: all(any(r["request_id"] == marker for r in p) for p in _logs(stack)), "lines"
    )
    for records in _logs(stack):
        assert not [r for r in records if r["request_id"] in rids], records
    # The probes' GetStatus calls (at least the first) left no line at info: only the marker's.
    assert [r["request_id"] for r in _status_lines(stack)[before:]] == [marker]


def test_to_the_last_line_after_a_stop_every_line_has_the_documented_fields(stack: Stack) -> None:
    """Last in the module: it stops the stack, whose drain and shutdown lines are read too."""
    stack.stop()
    service, gateway = _assert_documented(stack)
    assert any(r["logger"] == "gateway.drain" for r in gateway)
    assert [r for r in service if r["level"] == "warning" and "reason" in r]  # the earlier failure
