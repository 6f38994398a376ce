"""X-Request-ID: kept or made, used as the turn's id, echoed on every answer, on every log line."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.logs import JsonLineFormatter, RequestContextFilter, log_config
from tests.fakes.ollama import FakeOllama
from tests.gateway.obs_helpers import gateway, service_on

HEX_ID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama() as f:
        yield f


@pytest.fixture
def access_lines() -> Iterator[io.StringIO]:
    """The gateway's log lines as JSON, the way `logging.format: json` writes them."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonLineFormatter("%(message)s"))
    handler.addFilter(RequestContextFilter())
    logger = logging.getLogger("gateway")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield out
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def _lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


async def test_the_header_id_is_the_turns_id_and_on_the_log_line(
    fake: FakeOllama, tmp_path: Path, access_lines: io.StringIO
) -> None:
    async with service_on(fake, tmp_path) as svc, gateway(svc.port) as (_, client):
        reply = await client.post(
            "/api/chat",
            json={"message": "hello", "user_id": "ann"},
            headers={"X-Request-ID": "client-id_1"},
        )
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-request-id"] == "client-id_1"
    assert reply.json()["request_id"] == "client-id_1"  # the service ran the turn under it
    access = [r for r in _lines(access_lines) if r["logger"] == "gateway.access"]
    assert access == [
        {
            **access[0],
            "level": "info",
            "request_id": "client-id_1",
            "user": "ann",
            "method": "POST",
            "route": "/api/chat",
            "status": 200,
        }
    ]
    assert isinstance(access[0]["duration_ms"], float)
    assert "hello" not in access_lines.getvalue()  # no message text at info
    assert "Bearer" not in access_lines.getvalue()


async def test_a_body_request_id_wins_and_the_header_says_so(
    fake: FakeOllama, tmp_path: Path
) -> None:
    async with service_on(fake, tmp_path) as svc, gateway(svc.port) as (_, client):
        reply = await client.post(
            "/api/chat",
            json={"message": "hello", "user_id": "ann", "request_id": "from-the-body"},
            headers={"X-Request-ID": "from-the-header"},
        )
    assert reply.status_code == 200, reply.text
    assert reply.json()["request_id"] == "from-the-body"
    assert reply.headers["x-request-id"] == "from-the-body"


@pytest.mark.parametrize("header", ["has space", "x" * 65, "semi;colon", ""])
async def test_a_malformed_header_gets_a_new_id(
    lone_gateway: httpx.AsyncClient, header: str
) -> None:
    reply = await lone_gateway.get("/health/live", headers={"X-Request-ID": header})
    assert reply.status_code == 200
    assert HEX_ID.fullmatch(reply.headers["x-request-id"])


async def test_errors_carry_the_id_too(lone_gateway: httpx.AsyncClient) -> None:
    for method, path, body in [
        ("GET", "/no/such/route", None),
        ("POST", "/api/chat", {"message": 5}),  # 422
        ("GET", "/api/status", None),  # 503: no service behind it
    ]:
        reply = await lone_gateway.request(
            method, path, json=body, headers={"X-Request-ID": "err-1"}
        )
        assert reply.status_code >= 400
        assert reply.headers["x-request-id"] == "err-1", (path, reply.status_code)
        assert "code" in reply.json()


async def test_every_log_line_of_a_request_has_its_id(
    lone_gateway: httpx.AsyncClient, access_lines: io.StringIO
) -> None:
    await lone_gateway.get("/api/status", headers={"X-Request-ID": "status-1"})
    lines = _lines(access_lines)
    assert lines and all(r["request_id"] == "status-1" for r in lines)


def _format(fmt: str, record: logging.LogRecord) -> str:
    """A record through the formatter and filter the config builds (no global logging change)."""
    config = log_config(fmt, "info")
    assert config["handlers"]["stderr"]["filters"] == ["request"]
    builder = logging.config.DictConfigurator(config)
    formatter = builder.configure_formatter(config["formatters"]["default"])
    request_filter = builder.configure_filter(config["filters"]["request"])
    assert request_filter.filter(record)
    return str(formatter.format(record))


def test_text_and_json_configs_format_a_record() -> None:
    def record() -> logging.LogRecord:
        return logging.LogRecord(
            "gateway.x", logging.WARNING, __file__, 1, "it %s", ("broke",), None
        )

    line = json.loads(_format("json", record()))
    assert line == {
        "timestamp": line["timestamp"],
        "level": "warning",
        "logger": "gateway.x",
        "message": "it broke",
        "request_id": "-",
    }
    assert line["timestamp"].endswith("+00:00")
    assert _format("text", record()).endswith("WARNING gateway.x [-] it broke")
    assert log_config("json", "info")["loggers"]["httpx"]["level"] == "INFO"
    debug = log_config("json", "debug", include_content=True)
    assert "httpx" not in debug["loggers"]
    assert log_config("json", "debug")["loggers"]["httpx"]["level"] == "INFO"


async def test_an_unhandled_error_is_a_500_with_its_id_counted_and_logged(
    access_lines: io.StringIO,
) -> None:
    from gateway.app import create_app
    from tests.gateway.conftest import gateway_settings
    from tests.gateway_http import gateway_app_client

    app = create_app(gateway_settings(9))

    async def boom() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/boom", boom)
    async with (
        app.router.lifespan_context(app),
        gateway_app_client(app, raise_app_exceptions=False) as client,
    ):
        reply = await client.get("/boom", headers={"X-Request-ID": "bug-1"})
        metrics = (await client.get("/metrics")).text
    assert reply.status_code == 500
    assert reply.headers["x-request-id"] == "bug-1"
    assert 'agent_http_requests_total{method="GET",route="/boom",status="500"} 1.0' in metrics
    access = [r for r in _lines(access_lines) if r["logger"] == "gateway.access"]
    assert [(r["status"], r["request_id"]) for r in access] == [(500, "bug-1")]
