"""Errors the gateway answers on its own, before any RPC: the same JSON shape as RPC errors.

Every error body is ``{"detail": "...", "code": "..."}``. Failures of the
HTTP layer (unparsable body, unknown path, wrong method, body too large)
get codes of their own; a body that fails validation is 422 with each field
listed, and never echoes the offending value: it may be one JSON cannot
encode (NaN, Infinity, a lone surrogate), and it is the client's own data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

# HTTP statuses the framework raises itself, and the code each gets.
FRAMEWORK_CODES: dict[int, str] = {
    400: "invalid_argument",
    401: "unauthenticated",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    422: "invalid_argument",
}

_FRAMEWORK_DETAILS: dict[int, str] = {
    404: "no such endpoint",
    405: "method not allowed on this endpoint",
}


def error_json(
    status: int, code: str, detail: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The one error body, for errors raised by the gateway itself."""
    return JSONResponse(
        {"detail": detail, "code": code}, status_code=status, headers=dict(headers or {})
    )


def safe_text(value: object) -> str:
    """``value`` as text that UTF-8 (and so JSON) can always encode: lone surrogates become '?'."""
    return str(value).encode("utf-8", "replace").decode("utf-8")


def _safe_loc(loc: Iterable[Any]) -> list[str | int]:
    return [part if isinstance(part, int) else safe_text(part) for part in loc]


def field_errors(errors: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic's errors without ``input``/``ctx``/``url``: location, message and type only."""
    return [
        {
            "loc": _safe_loc(e.get("loc", ())),
            "msg": safe_text(e.get("msg", "")),
            "type": safe_text(e.get("type", "")),
        }
        for e in errors
    ]


def validation_response(exc: RequestValidationError) -> JSONResponse:
    """422 with a one-line summary and the list of invalid fields."""
    errors = field_errors(exc.errors())
    summary = "; ".join(
        f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in errors
    )
    return JSONResponse(
        {"detail": summary or "invalid request", "code": "invalid_argument", "errors": errors},
        status_code=422,
    )


def http_exception_response(exc: HTTPException) -> JSONResponse:
    """A framework HTTP error (404, 405, 400 unparsable body, 413) in the JSON shape."""
    status = exc.status_code
    detail = exc.detail if isinstance(exc.detail, str) else ""
    if status in _FRAMEWORK_DETAILS and detail in ("", "Not Found", "Method Not Allowed"):
        detail = _FRAMEWORK_DETAILS[status]
    code = FRAMEWORK_CODES.get(status, "unknown")
    return error_json(status, code, safe_text(detail or code), exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    """Route every framework error through the JSON shape."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        return validation_response(exc)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        return http_exception_response(exc)
