"""Both processes' JSON log lines: the fields docs/operations.md lists, and nothing unasked.

One stack with ``logging.format: json`` at info; every line either process
writes is read back. A provider failure is one warning naming its reason,
URL and model; readiness probes write nothing at info.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.e2e.queue_helpers import wait_until
from tests.e2e.stack import Stack, launch, provider_config
from tests.fakes.ollama import FakeOllama
from tests.fakes.script import Reply
from tests.gateway_http import gateway_get

LEVELS = {"debug", "info", "warning", "error", "critical"}
ANSI = re.compile(r"\x1b\[")


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


def test_every_line_of_both_processes_has_the_documented_fields(
    stack: Stack, client: httpx.Client
) -> None:
    rid = f"fields-{uuid.uuid4().hex[:8]}"
    reply = client.post(
        "/api/chat", json={"message": "hi", "user_id": "logs"}, headers={"X-Request-ID": rid}
    )
    assert reply.status_code == 200, reply.text
    wait_until(lambda: all(any(r["request_id"] == rid for r in p) for p in _logs(stack)), "lines")
    for process, records in zip(("service", "gateway"), _logs(stack), strict=True):
        assert records, process
        for record in records:
            where = (process, record)
            stamp = datetime.fromisoformat(record["timestamp"])
            assert stamp.utcoffset() == timedelta(0), where
            assert record["level"] in LEVELS, where
            assert record["logger"] and isinstance(record["message"], str), where
            assert record["request_id"], where  # "-" outside a request, never empty
            assert "color_message" not in record and not ANSI.search(json.dumps(record)), where
    service, gateway = _logs(stack)
    [rpc] = [r for r in service if r["request_id"] == rid and r.get("rpc") == "Chat"]
    assert (rpc["logger"], rpc["user"], rpc["code"]) == ("service.access", "logs", "OK")
    [access] = [r for r in gateway if r["request_id"] == rid and r["logger"] == "gateway.access"]
    assert (access["status"], access["route"], access["user"]) == (200, "/api/chat", "logs")


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
