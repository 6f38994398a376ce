"""The shared translation of upstream failures."""

from __future__ import annotations

import email.utils
import time

import pytest

from service.errors import Code, Reason
from service.providers.errors import Upstream, connect_failure, from_status, parse_retry_after

UPSTREAM = Upstream("Ollama", "http://box:11434", "fix the key", "run `ollama pull {model}`")


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after": "12"}, 12.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after": "soon"}, None),
    ],
)
def test_retry_after_headers(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers) == expected


def test_retry_after_as_an_http_date() -> None:
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    wait = parse_retry_after({"retry-after": later})
    assert wait is not None and 25 <= wait <= 31


def test_not_found_names_model_url_and_remedy() -> None:
    error = from_status(UPSTREAM, 404, "model 'm' not found", model="m")
    assert error.code == Code.NOT_FOUND
    assert "http://box:11434" in error.message
    assert "ollama pull m" in error.message


def test_unexpected_status_is_an_invalid_response_not_internal() -> None:
    error = from_status(UPSTREAM, 418, "teapot", model="m")
    assert error.code == Code.UNAVAILABLE
    assert error.reason == Reason.PROVIDER_INVALID_RESPONSE
    assert error.metadata == {"provider": "ollama", "url": "http://box:11434", "model": "m"}


def test_rejected_credentials_have_their_own_reason() -> None:
    error = from_status(UPSTREAM, 401, "bad key", model="m")
    assert error.code == Code.FAILED_PRECONDITION
    assert error.reason == Reason.PROVIDER_CREDENTIALS_REJECTED
    assert "fix the key" in error.message


def test_connect_failure_reason_from_the_cause_chain() -> None:
    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except OSError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        error = connect_failure(UPSTREAM, outer)
    assert error.code == Code.UNAVAILABLE
    assert error.message == "cannot reach Ollama at http://box:11434: connection refused"
