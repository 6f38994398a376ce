"""GetConversation in pages, over gRPC and over REST, on a conversation larger than a page."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import httpx
import pytest
from agent.v1 import agent_pb2 as pb
from agent.v1 import agent_pb2_grpc

from tests.e2e.stack import Stack
from tests.gateway_http import gateway_client

TURNS = 55  # 110 messages: more than the default page of 100


@pytest.fixture(scope="module")
def http(stack: Stack) -> Iterator[httpx.Client]:
    with gateway_client(stack.url, timeout=20) as c:
        yield c


@pytest.fixture(scope="module")
def long_conversation(http: httpx.Client) -> tuple[str, str, list[str]]:
    """(user, conversation id, every message text in order)."""
    who = f"p-{uuid.uuid4().hex[:10]}"
    conversation = ""
    for i in range(TURNS):
        r = http.post("/api/chat", json={"message": f"t{i:03d}", "user_id": who})
        assert r.status_code == 200, r.text
        conversation = r.json()["conversation_id"]
    expected = [text for i in range(TURNS) for text in (f"t{i:03d}", f"echo: t{i:03d}")]
    return who, conversation, expected


def rest_page(http: httpx.Client, conversation: str, **params: object) -> httpx.Response:
    return http.get(f"/api/conversations/{conversation}", params=params)


def test_rest_default_page_is_100_then_the_rest(
    http: httpx.Client, long_conversation: tuple[str, str, list[str]]
) -> None:
    who, conversation, expected = long_conversation
    first = rest_page(http, conversation, user_id=who).json()
    assert [m["text"] for m in first["messages"]] == expected[:100]
    assert first["message_count"] == len(expected)
    assert first["next_page_token"]
    second = rest_page(http, conversation, user_id=who, page_token=first["next_page_token"])
    assert second.status_code == 200, second.text
    assert [m["text"] for m in second.json()["messages"]] == expected[100:]
    assert second.json()["next_page_token"] == ""


def test_rest_walk_reaches_every_message_once_in_order(
    http: httpx.Client, long_conversation: tuple[str, str, list[str]]
) -> None:
    who, conversation, expected = long_conversation
    seen: list[str] = []
    token, pages = "", 0
    while True:
        r = rest_page(http, conversation, user_id=who, page_size=7, page_token=token)
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["messages"]) <= 7
        seen += [m["text"] for m in body["messages"]]
        pages += 1
        token = body["next_page_token"]
        if not token:
            break
    assert seen == expected
    assert pages == -(-len(expected) // 7)


def test_grpc_walk_reaches_every_message_once_in_order(
    stack: Stack, long_conversation: tuple[str, str, list[str]]
) -> None:
    who, conversation, expected = long_conversation
    with grpc.insecure_channel(stack.grpc_address) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)  # type: ignore[no-untyped-call]
        seen: list[str] = []
        token = ""
        while True:
            reply = stub.GetConversation(
                pb.GetConversationRequest(
                    conversation_id=conversation, user_id=who, page_size=30, page_token=token
                ),
                timeout=10,
            )
            assert reply.conversation.conversation_id == conversation
            seen += [m.text for m in reply.messages]
            token = reply.next_page_token
            if not token:
                break
        assert seen == expected

        with pytest.raises(grpc.RpcError) as caught:
            stub.GetConversation(
                pb.GetConversationRequest(conversation_id=conversation, user_id=who, page_size=501),
                timeout=10,
            )
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("size", ["501", "-1", "2147483647"])
def test_rest_page_size_out_of_range_is_400(
    http: httpx.Client, long_conversation: tuple[str, str, list[str]], size: str
) -> None:
    who, conversation, _ = long_conversation
    r = rest_page(http, conversation, user_id=who, page_size=size)
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "invalid_argument"
    assert "page_size must be between 1 and 500" in r.json()["detail"]


@pytest.mark.parametrize("size", ["1.0", "1_000", "+5", "ten", "", "99999999999"])
def test_rest_page_size_must_be_a_plain_integer(
    http: httpx.Client, long_conversation: tuple[str, str, list[str]], size: str
) -> None:
    who, conversation, _ = long_conversation
    r = rest_page(http, conversation, user_id=who, page_size=size)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "invalid_argument"


def test_rest_bad_or_foreign_tokens_are_400_and_strangers_404(
    http: httpx.Client, long_conversation: tuple[str, str, list[str]]
) -> None:
    who, conversation, _ = long_conversation
    r = rest_page(http, conversation, user_id=who, page_token="garbage!")
    assert r.status_code == 400, r.text
    assert r.json() == {
        "detail": "page_token is not valid; start again without one",
        "code": "invalid_argument",
    }

    token = rest_page(http, conversation, user_id=who, page_size=1).json()["next_page_token"]
    other = http.post("/api/chat", json={"message": "x", "user_id": who, "new_conversation": True})
    r = rest_page(http, other.json()["conversation_id"], user_id=who, page_token=token)
    assert r.status_code == 400, r.text
    assert "another conversation" in r.json()["detail"]

    r = rest_page(http, conversation, user_id="stranger", page_token=token)
    assert r.status_code == 404, r.text
