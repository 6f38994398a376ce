"""Bad bodies get 422 (or 400) in the JSON error shape, never 500, and the value is never echoed."""

from __future__ import annotations

import httpx
import pytest

from tests.gateway.conftest import AUTH

CHAT_ROUTES = ["/api/chat", "/api/chat/stream"]
REF_ROUTES = ["/api/queue/status", "/api/queue/cancel"]
POST_ROUTES = CHAT_ROUTES + REF_ROUTES

# Values json.loads accepts but JSON output cannot carry (allow_nan=False, UTF-8).
UNENCODABLE = ["NaN", "Infinity", "-Infinity", "1e400", '"\\ud800"', '"a\\udfffb"']
CHAT_FIELDS = [
    "message",
    "conversation_id",
    "user_id",
    "priority",
    "new_conversation",
    "provider",
    "model",
    "request_id",
]
REF_FIELDS = ["request_id", "user_id"]


def _body(fields: dict[str, str], route: str) -> bytes:
    base = {"message": '"hi"'} if route in CHAT_ROUTES else {"request_id": '"r_1"'}
    base.update(fields)
    return ("{" + ",".join(f'"{k}": {v}' for k, v in base.items()) + "}").encode()


def _assert_error_shape(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert isinstance(body["detail"], str) and body["detail"]
    assert isinstance(body["code"], str) and body["code"]
    return body


def _cases() -> list[tuple[str, str, str]]:
    cases = []
    for route in POST_ROUTES:
        fields = CHAT_FIELDS if route in CHAT_ROUTES else REF_FIELDS
        cases += [(route, field, value) for field in fields for value in UNENCODABLE]
    return cases


@pytest.mark.parametrize(("route", "field", "value"), _cases())
async def test_unencodable_values_are_422_and_never_echoed(
    client: httpx.AsyncClient, route: str, field: str, value: str
) -> None:
    r = await client.post(
        route,
        content=_body({field: value}, route),
        headers={**AUTH, "content-type": "application/json"},
    )
    body = _assert_error_shape(r, 422)
    assert body["code"] == "invalid_argument"
    assert field in body["detail"]
    for error in body["errors"]:
        assert set(error) == {"loc", "msg", "type"}  # no input, no ctx


@pytest.mark.parametrize("route", POST_ROUTES)
async def test_unencodable_unknown_key_is_422(client: httpx.AsyncClient, route: str) -> None:
    r = await client.post(
        route,
        content=_body({"\\ud800": "NaN"}, route),
        headers={**AUTH, "content-type": "application/json"},
    )
    _assert_error_shape(r, 422)


@pytest.mark.parametrize("value", ["true", "false", "1.0", "3.5", '"3"', "[3]", "null"])
@pytest.mark.parametrize("route", CHAT_ROUTES)
async def test_priority_must_be_a_json_integer(
    client: httpx.AsyncClient, route: str, value: str
) -> None:
    r = await client.post(
        route,
        content=_body({"priority": value}, route),
        headers={**AUTH, "content-type": "application/json"},
    )
    body = _assert_error_shape(r, 422)
    assert "priority" in body["detail"]


@pytest.mark.parametrize("value", ["1.5", "1.0", "true", "1_0", "+5", " 5", "abc", ""])
async def test_page_size_must_be_digits(client: httpx.AsyncClient, value: str) -> None:
    r = await client.get("/api/conversations", params={"page_size": value}, headers=AUTH)
    body = _assert_error_shape(r, 422)
    assert "page_size" in body["detail"]


async def test_page_size_in_digits_is_accepted(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/conversations", params={"page_size": "10"}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json() == {"conversations": [], "next_page_token": ""}


@pytest.mark.parametrize(
    "content",
    [
        b'{"message": "caf\xe9"}',  # latin-1, not UTF-8
        b'{"message": "\xff\xfe"}',  # bytes that are no UTF-8 at all
        b"[" * 100_000 + b"]" * 100_000,  # deeper than the JSON parser recurses
        b'{"message": ' * 50_000 + b'"x"' + b"}" * 50_000,
    ],
    ids=["latin-1", "not-utf-8", "deep-array", "deep-object"],
)
@pytest.mark.parametrize("route", POST_ROUTES)
async def test_unparsable_bodies_are_400_with_a_code(
    client: httpx.AsyncClient, route: str, content: bytes
) -> None:
    r = await client.post(route, content=content, headers={"content-type": "application/json"})
    body = _assert_error_shape(r, 400)
    assert body["code"] == "invalid_argument"


async def test_framework_404_and_405_have_the_error_shape(lone_gateway: httpx.AsyncClient) -> None:
    body = _assert_error_shape(await lone_gateway.get("/api/nothing-here"), 404)
    assert body["code"] == "not_found"
    r = await lone_gateway.put("/api/chat", json={"message": "hi"})
    body = _assert_error_shape(r, 405)
    assert body["code"] == "method_not_allowed"
    assert "POST" in r.headers["allow"]


@pytest.mark.parametrize("route", POST_ROUTES)
async def test_malformed_json_is_400_with_where_it_broke(
    lone_gateway: httpx.AsyncClient, route: str
) -> None:
    r = await lone_gateway.post(
        route, content=b'{"message": ', headers={"content-type": "application/json"}
    )
    body = _assert_error_shape(r, 400)
    assert body["code"] == "invalid_argument"
    assert body["detail"].startswith("the body is not valid JSON at character 12")
    assert "errors" not in body


@pytest.mark.parametrize("size", ["0", None])
async def test_page_size_zero_or_absent_is_the_default_on_both_routes(
    client: httpx.AsyncClient, size: str | None
) -> None:
    params = {} if size is None else {"page_size": size}
    r = await client.get("/api/conversations", params=params, headers=AUTH)
    assert r.status_code == 200, r.text
    r = await client.get("/api/conversations/c_missing", params=params, headers=AUTH)
    assert r.status_code == 404, r.text  # past validation: the service looked it up


@pytest.mark.parametrize("size", ["-1", "101", "999"])
async def test_page_size_out_of_range_is_400_from_the_service(
    client: httpx.AsyncClient, size: str
) -> None:
    r = await client.get("/api/conversations", params={"page_size": size}, headers=AUTH)
    body = _assert_error_shape(r, 400)
    assert "page_size must be between 1 and 100" in body["detail"]
