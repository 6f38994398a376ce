"""The OpenAPI document: names, auth, real response bodies, and each route's real errors."""

from __future__ import annotations

from typing import Any

import pytest
from agent.v1 import agent_pb2
from google.api import annotations_pb2

from gateway.app import create_app


def _operation_ids() -> dict[tuple[str, str], str]:
    """Each route's operationId is its RPC's name, read from the proto's http annotations."""
    service = agent_pb2.DESCRIPTOR.services_by_name["AgentService"]
    ids = {
        ("get", "/health"): "Health",
        ("get", "/health/live"): "Live",
        ("get", "/health/ready"): "Ready",
    }
    for method in service.methods:
        rule = method.GetOptions().Extensions[annotations_pb2.http]
        verb = rule.WhichOneof("pattern")
        assert verb is not None, f"{method.name} has no http annotation"
        ids[(verb, getattr(rule, verb))] = method.name
    return ids


OPERATION_IDS = _operation_ids()

# The errors each route can answer (see README, "Endpoints").
ERRORS = {
    "Chat": {400, 401, 403, 404, 409, 413, 422, 429, 499, 500, 502, 503, 504},
    "ChatStream": {400, 401, 403, 404, 409, 413, 422, 429, 500, 502, 503, 504},
    "GetStatus": {400, 401, 403, 422, 500, 503, 504},
    "GetQueueStatus": {400, 401, 403, 404, 413, 422, 500, 503, 504},
    "CancelRequest": {400, 401, 403, 404, 413, 422, 500, 503, 504},
    "ListConversations": {400, 401, 403, 422, 500, 503, 504},
    "ListRequests": {400, 401, 403, 422, 500, 503, 504},
    "WatchRequest": {400, 401, 403, 404, 422, 500, 503, 504},
    "GetConversation": {400, 401, 403, 422, 404, 500, 503, 504},
    "DeleteConversation": {400, 401, 403, 422, 404, 500, 503, 504},
    "Health": {503},
    "Live": set(),
    "Ready": {503},
}


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return create_app().openapi()


def _operations(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {op["operationId"]: op for ops in schema["paths"].values() for op in ops.values()}


def test_operation_ids_are_the_rpc_names(schema: dict[str, Any]) -> None:
    found = {
        (verb, path): op["operationId"]
        for path, ops in schema["paths"].items()
        for verb, op in ops.items()
    }
    assert found == OPERATION_IDS


def test_bearer_scheme_on_every_api_route(schema: dict[str, Any]) -> None:
    scheme = schema["components"]["securitySchemes"]["bearer"]
    assert scheme == {**scheme, "type": "http", "scheme": "bearer"}
    for path, ops in schema["paths"].items():
        for op in ops.values():
            expected = [{"bearer": []}] if path.startswith("/api/") else None
            assert op.get("security") == expected, path


def test_each_route_documents_its_real_errors(schema: dict[str, Any]) -> None:
    for name, op in _operations(schema).items():
        statuses = {int(s) for s in op["responses"] if not s.startswith("2")}
        assert statuses == ERRORS[name], name
        for status in statuses - {503} if name in ("Health", "Ready") else statuses:
            content = op["responses"][str(status)]["content"]["application/json"]
            assert content["schema"] == {"$ref": "#/components/schemas/ErrorBody"}, (name, status)
    headers = _operations(schema)["Chat"]["responses"]
    assert "Retry-After" in headers["429"]["headers"]
    assert "WWW-Authenticate" in headers["401"]["headers"]


@pytest.mark.parametrize(
    ("name", "model"),
    [
        ("GetStatus", "StatusResponse"),
        ("GetConversation", "ConversationResponse"),
        ("DeleteConversation", "DeleteResponse"),
        ("Chat", "ChatResponse"),
        ("Health", "HealthResponse"),
    ],
)
def test_200_bodies_are_documented(schema: dict[str, Any], name: str, model: str) -> None:
    ok = _operations(schema)[name]["responses"]["200"]["content"]["application/json"]
    assert ok["schema"] == {"$ref": f"#/components/schemas/{model}"}
    assert schema["components"]["schemas"][model]["properties"]


def test_stream_is_documented_as_server_sent_events(schema: dict[str, Any]) -> None:
    ok = _operations(schema)["ChatStream"]["responses"]["200"]
    assert set(ok["content"]) == {"text/event-stream"}
    example = ok["content"]["text/event-stream"]["example"]
    for event in ("queued", "start", "message", "tool_call", "tool_result", "done"):
        assert f"event: {event}\n" in example
    for event in ("queued", "start", "message", "done", "error"):
        assert f"`{event}`" in ok["description"]


@pytest.mark.parametrize("model", ["ChatRequest", "RequestRef"])
def test_request_bodies_have_examples(schema: dict[str, Any], model: str) -> None:
    assert schema["components"]["schemas"][model]["examples"]


def test_strict_integers_in_the_schema(schema: dict[str, Any]) -> None:
    priority = schema["components"]["schemas"]["ChatRequest"]["properties"]["priority"]
    assert priority["type"] == "integer"
    params = _operations(schema)["ListConversations"]["parameters"]
    page_size = next(p for p in params if p["name"] == "page_size")["schema"]
    assert page_size["type"] == "integer" and "0 means 20" in page_size["description"]


def test_request_fields_with_defaults_are_optional_and_carry_no_default(
    schema: dict[str, Any],
) -> None:
    # openapi-typescript (defaultNonNullable) makes a field with a `default` required.
    for name, body in schema["components"]["schemas"].items():
        for field, prop in body.get("properties", {}).items():
            assert "default" not in prop, (name, field)
    error = schema["components"]["schemas"]["ErrorBody"]
    assert error["required"] == ["detail", "code"]  # reason, retry_after_s, errors: optional
    chat = schema["components"]["schemas"]["ChatRequest"]
    assert chat["required"] == ["message"]
    assert "(default 5)" in chat["properties"]["priority"]["description"]


def test_each_sse_event_has_its_own_schema(schema: dict[str, Any]) -> None:
    schemas = schema["components"]["schemas"]
    union = schemas["StreamFrame"]
    mapping = union["discriminator"]["mapping"]
    events = ("queued", "start", "message", "tool_call", "tool_result", "done", "error")
    assert set(mapping) == set(events)
    assert [ref["$ref"] for ref in union["oneOf"]] == list(mapping.values())
    for event, ref in mapping.items():
        frame = schemas[ref.rsplit("/", 1)[-1]]
        assert frame["required"] == ["id", "event", "data"]
        assert frame["properties"]["event"]["const"] == event
        data = frame["properties"]["data"]["contentSchema"]["$ref"].rsplit("/", 1)[-1]
        assert schemas[data]["properties"], event
    assert mapping["done"].endswith("/DoneFrame")
    done = schemas["DoneFrame"]["properties"]["data"]["contentSchema"]
    assert done == {"$ref": "#/components/schemas/ChatResponse"}
    for name in ("ChatStream", "WatchRequest"):
        media = _operations(schema)[name]["responses"]["200"]["content"]["text/event-stream"]
        assert media["itemSchema"] == {"$ref": "#/components/schemas/StreamFrame"}
        assert "schema" not in media  # in OpenAPI 3.2 it would describe the whole stream
