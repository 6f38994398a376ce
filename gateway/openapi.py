"""What the OpenAPI document says beyond the routes: errors per route, auth, the SSE body.

Each route lists the errors it can really answer (a test and the schemathesis
run hold the document to the behaviour); ``/api/*`` routes declare the
bearer scheme, which gives Swagger UI its Authorize button.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from gateway.models import ErrorBody

BEARER_SCHEME = "bearer"

_DESCRIPTIONS: dict[int, str] = {
    400: "Invalid argument (e.g. a message over api.max_message_chars), or an unparsable body",
    401: "No token, or one that is unknown or failed a check (an expired or invalid JWT)",
    403: "The token may not act as the user named",
    404: "No such conversation or request for this user",
    409: "The client-chosen request_id is already in use",
    413: "The body is larger than api_server.max_body_bytes",
    422: "The body or a parameter (e.g. user_id) fails validation; `errors` lists each field",
    429: "A queue limit was hit; retry after Retry-After seconds",
    499: "The request was cancelled (by its owner, through /api/queue/cancel)",
    500: "An internal error of the service",
    503: "The service is unreachable or shutting down, or the provider is unavailable",
    504: "The request did not finish within api_server.request_timeout",
}

_RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": '`Bearer`; `Bearer error="invalid_token"` when a token was sent',
            "schema": {"type": "string"},
        }
    },
    429: _RETRY_AFTER,
    503: _RETRY_AFTER,
}

# Every /api route talks to the service, so each can meet these.
_ANY_CALL = (400, 401, 403, 422, 500, 503, 504)


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route: the common service errors plus ``statuses``."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in sorted({*_ANY_CALL, *statuses}):
        entry: dict[str, Any] = {"model": ErrorBody, "description": _DESCRIPTIONS[status]}
        if status in _HEADERS:
            entry["headers"] = _HEADERS[status]
        out[status] = entry
    return out


CHAT_ERRORS = errors(404, 409, 413, 422, 429, 499)
STREAM_ERRORS = errors(404, 409, 413, 422, 429)
WATCH_ERRORS = errors(404)
REF_ERRORS = errors(404, 413, 422)
LIST_ERRORS = errors(422)
CONVERSATION_ERRORS = errors(404)
STATUS_ERRORS = errors()

_SSE_EXAMPLE = (
    'event: queued\ndata: {"request_id":"r_1","position":1,"estimated_wait_s":4.2}\n\n'
    'event: start\ndata: {"request_id":"r_1","conversation_id":"c_1",'
    '"provider":"ollama","model":"llama3.2"}\n\n'
    'event: message\ndata: {"text":"17*23 is "}\n\n'
    'event: tool_call\ndata: {"id":"t_1","name":"calculator",'
    '"arguments":{"expression":"17*23"}}\n\n'
    'event: tool_result\ndata: {"id":"t_1","name":"calculator","result":"391","is_error":false}\n\n'
    'event: message\ndata: {"text":"391."}\n\n'
    'event: done\ndata: {"response":"17*23 is 391.","conversation_id":"c_1","request_id":"r_1",'
    '"usage":{"input_tokens":52,"output_tokens":9,"cache_creation_input_tokens":0,'
    '"cache_read_input_tokens":0},"provider":"ollama","model":"llama3.2",'
    '"stop_reason":"end_turn","tool_calls":[]}\n\n'
)

# One event of the stream (its `data` is a JSON object, sent as one line of text).
_SSE_EVENT = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {
            "type": "string",
            "enum": ["queued", "start", "message", "tool_call", "tool_result", "done", "error"],
        },
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
}

STREAM_OK: dict[int | str, dict[str, Any]] = {
    200: {
        "description": (
            "A Server-Sent-Events stream. Each event's data is one JSON object: "
            "`queued` {request_id, position, estimated_wait_s} (again when the position "
            "changes), `start` {request_id, conversation_id, provider, model}, "
            '`message` {"text": delta}, `tool_call` {id, name, arguments}, '
            "`tool_result` {id, name, result, is_error}, then exactly one `done` (the "
            "/api/chat answer) or `error` {code, message, retry_after_s?}. Comment lines "
            "(`: keep-alive`) keep an idle connection open. An error before the first "
            "event is a plain HTTP error instead (see the other responses)."
        ),
        "content": {"text/event-stream": {"schema": _SSE_EVENT, "example": _SSE_EXAMPLE}},
    }
}


def install_openapi(app: FastAPI) -> None:
    """Generate the document once, with the bearer scheme on every /api route."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        components = schema.setdefault("components", {})
        components.setdefault("securitySchemes", {})[BEARER_SCHEME] = {
            "type": "http",
            "scheme": "bearer",
            "description": "IOS_APITOKEN or a per-user token; not needed in open mode",
        }
        for path, operations in schema["paths"].items():
            for operation in operations.values():
                if path.startswith("/api/"):
                    operation["security"] = [{BEARER_SCHEME: []}]
                responses = operation["responses"]
                # The framework's default 422 (its own body shape) where no validation can fail.
                if "HTTPValidationError" in str(responses.get("422", "")):
                    del responses["422"]
                ok = responses.get("200", {}).get("content", {})
                if "text/event-stream" in ok:  # the framework also lists its JSON default
                    ok.pop("application/json", None)
        for unused in ("HTTPValidationError", "ValidationError"):
            components.get("schemas", {}).pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
