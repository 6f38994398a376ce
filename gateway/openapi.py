"""What the OpenAPI document says beyond the routes: errors per route, auth, the SSE frames.

Each route lists the errors it can really answer (a test and the schemathesis
run hold the document to the behaviour); ``/api/*`` routes declare the
bearer scheme, which gives Swagger UI its Authorize button.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from gateway.events import EVENTS
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
    502: "The provider answered with something that is not its protocol (not retried)",
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


# 502 only where a turn reaches the provider.
CHAT_ERRORS = errors(404, 409, 413, 422, 429, 499, 502)
STREAM_ERRORS = errors(404, 409, 413, 422, 429, 502)
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

STREAM_OK: dict[int | str, dict[str, Any]] = {
    200: {
        "description": (
            "A Server-Sent-Events stream. Each event's data is one JSON object: "
            "`queued` {request_id, position, estimated_wait_s} (again when the position "
            "changes), `start` {request_id, conversation_id, provider, model}, "
            '`message` {"text": delta}, `tool_call` {id, name, arguments}, '
            "`tool_result` {id, name, result, is_error}, then exactly one `done` (the "
            "/api/chat answer) or `error` {code, message, status, reason?, retry_after_s?}. "
            "Every frame has an `id:`, increasing, for Last-Event-ID; a re-attach at or past "
            "the end gets the last event (`done` or `error`) again, numbered after the "
            "Last-Event-ID sent. Comment lines (`: keep-alive`) keep an idle connection open. "
            "An error before the first event is a plain HTTP error instead (see the other "
            "responses)."
        ),
        "content": {
            "text/event-stream": {
                # OpenAPI 3.2's itemSchema: the schema of each event. No `schema`: in 3.2 it
                # would describe the whole stream as an array of events.
                "itemSchema": {"$ref": "#/components/schemas/StreamFrame"},
                "example": _SSE_EXAMPLE,
            }
        },
    }
}


def _frame(event: str, model: str) -> dict[str, Any]:
    """One SSE frame as OpenAPI 3.2 reads an event: its fields are strings."""
    return {
        "title": f"{event} frame",
        "type": "object",
        "required": ["id", "event", "data"],
        "properties": {
            "id": {
                "type": "string",
                "pattern": "^[1-9][0-9]*$",
                "description": "The event's number, for Last-Event-ID",
            },
            "event": {"type": "string", "const": event},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"$ref": f"#/components/schemas/{model}"},
            },
        },
    }


def _add_frame_schemas(schemas: dict[str, Any]) -> None:
    """The SSE event models, one frame schema per event, and their union."""
    _, top = models_json_schema(
        [(model, "serialization") for model in EVENTS.values()],
        ref_template="#/components/schemas/{model}",
    )
    for name, definition in top.get("$defs", {}).items():
        schemas.setdefault(name, definition)
    frames = {
        event: f"{model.__name__.removesuffix('Event')}Frame" for event, model in EVENTS.items()
    }
    frames["done"] = "DoneFrame"  # its data is the ChatResponse
    for event, model in EVENTS.items():
        schemas[frames[event]] = _frame(event, model.__name__)
    schemas["StreamFrame"] = {
        "title": "StreamFrame",
        "description": "One frame of an SSE route; `data` is JSON of the event's model.",
        "oneOf": [{"$ref": f"#/components/schemas/{name}"} for name in frames.values()],
        "discriminator": {
            "propertyName": "event",
            "mapping": {event: f"#/components/schemas/{name}" for event, name in frames.items()},
        },
    }


def _defaults_in_words(schema: dict[str, Any]) -> None:
    """Move each default of a body's fields into its description.

    Several generators (openapi-typescript among them) make a field with a
    `default` required in the types they emit: a client would have to send
    `priority` and `new_conversation` (the service applies the defaults
    itself), and would count on response fields the gateway leaves out when
    they are empty (`reason`, `retry_after_s`).
    """
    for prop in schema.get("properties", {}).values():
        if "default" in prop:
            default = prop.pop("default")
            if default is not None:
                words = json.dumps(default)
                prop["description"] = f"{prop.get('description', '')} (default {words})".strip()


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
        schemas = components.setdefault("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        _add_frame_schemas(schemas)
        for body in schemas.values():
            _defaults_in_words(body)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
