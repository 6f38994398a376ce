"""Per-user limits over real sockets: each limit refused over REST and gRPC with 429 /
RESOURCE_EXHAUSTED, Retry-After and a message naming it, while other users go on; tiers."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from agent.v1 import agent_pb2 as pb

from tests.e2e.limits_helpers import (
    Users,
    assert_refused_over_grpc,
    assert_refused_over_rest,
    chat,
    grpc_stub,
)
from tests.e2e.queue_helpers import (
    HANG,
    LiveStream,
    ReplyBook,
    chat_body,
    label,
    queue_stack,
    wait_until,
)
from tests.e2e.stack import Stack
from tests.fakes.ollama import FakeOllama

LIMITS = {
    "requests_per_minute": 1,
    "max_output_tokens": 40,
    "tiers": {
        "pro": {"requests_per_minute": 0, "max_output_tokens": 400},
        "single": {"requests_per_minute": 0, "max_active": 1},
        "daily": {"requests_per_minute": 0, "tokens_per_day": 1},
        "monthly": {"requests_per_minute": 0, "tokens_per_month": 1},
    },
}
ENTRIES = {
    "rate": {},
    "free-a": {},
    "free-b": {},
    "pro-a": {"tier": "pro"},
    "pro-b": {"tier": "pro"},
    "single": {"tier": "single"},
    "daily": {"tier": "daily"},
    "monthly": {"tier": "monthly"},
}


@pytest.fixture(scope="module")
def users(tmp_path_factory: pytest.TempPathFactory) -> tuple[Users, str]:
    path = tmp_path_factory.mktemp("users") / "users.yaml"
    return Users.write(path, ENTRIES), str(path)


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    fake_ollama: FakeOllama,
    book: ReplyBook,
    users: tuple[Users, str],
) -> Iterator[Stack]:
    stack = queue_stack(
        tmp_path_factory.mktemp("limits-e2e"),
        fake_ollama,
        ollama={"parallel": 2},
        limits=LIMITS,
        auth={"tokens_file": users[1]},
    )
    yield stack
    stack.stop()


@pytest.fixture
def who(users: tuple[Users, str]) -> Users:
    return users[0]


def test_requests_per_minute(stack: Stack, client: httpx.Client, who: Users) -> None:
    assert chat(client, who, "rate").status_code == 200
    retry = assert_refused_over_rest(client, who, "rate", "requests_per_minute=1")
    assert retry <= 60
    assert assert_refused_over_grpc(stack.grpc_address, who, "rate", "requests_per_minute=1") <= 60
    # Another user of the same tier has a bucket of their own.
    assert chat(client, who, "free-a").status_code == 200


def test_max_active(stack: Stack, client: httpx.Client, book: ReplyBook, who: Users) -> None:
    text = book.set(label("hold"), HANG)
    holder = LiveStream(stack.url, chat_body("single", text), headers=who.headers("single"))
    holder.wait_event("start")
    assert_refused_over_rest(client, who, "single", "max_active=1")
    assert_refused_over_grpc(stack.grpc_address, who, "single", "max_active=1")
    assert chat(client, who, "pro-a").status_code == 200  # the other slot serves others

    assert cancel_as(client, who, "single", holder.request_id) == 200
    assert holder.ended_with().data["code"] == "cancelled"
    wait_until(lambda: chat(client, who, "single").status_code == 200, "single to be let in")


def cancel_as(client: httpx.Client, who: Users, name: str, request_id: str) -> int:
    r = client.post("/api/queue/cancel", json={"request_id": request_id}, headers=who.headers(name))
    return r.status_code


@pytest.mark.parametrize(
    ("name", "limit"), [("daily", "tokens_per_day=1"), ("monthly", "tokens_per_month=1")]
)
def test_token_budgets_survive_a_restart(
    stack: Stack, client: httpx.Client, who: Users, name: str, limit: str
) -> None:
    # A turn admitted within budget finishes, even though it goes over.
    first = chat(client, who, name)
    assert first.status_code == 200, first.text
    spent = first.json()["usage"]
    assert spent["input_tokens"] + spent["output_tokens"] > 1

    retry = assert_refused_over_rest(client, who, name, limit)
    assert retry <= (86_400 if name == "daily" else 31 * 86_400)
    assert assert_refused_over_grpc(stack.grpc_address, who, name, limit) >= 1
    assert chat(client, who, "pro-b").status_code == 200  # others go on

    # /usage still answers (commands are not metered) and says what is left.
    usage = client.post("/api/chat", json={"message": "/usage"}, headers=who.headers(name)).json()[
        "response"
    ]
    assert f"tier {name}" in usage and "0 left" in usage
    status = client.get("/api/status", headers=who.headers(name)).json()
    assert status["user_limits"]["tier"] == name
    left = "left_today" if name == "daily" else "left_this_month"
    assert status["user_budget"][left] == 0
    assert status["user_budget"]["spent_today"] >= 2

    assert stack.service is not None
    stack.service.stop()
    stack.start_service()
    stack.wait_service_ready()
    assert_refused_over_rest(client, who, name, limit)


def test_a_tier_override_applies_to_that_tier_only(
    client: httpx.Client, book: ReplyBook, who: Users
) -> None:
    capped, lifted = label("default-tier"), label("pro-tier")
    assert chat(client, who, "free-b", capped).status_code == 200
    for _ in range(3):  # pro has no request rate limit; the default tier allows 1 a minute
        assert chat(client, who, "pro-a", lifted).status_code == 200
    default_call, pro_call = book.request_for(capped), book.request_for(lifted)
    assert default_call is not None and pro_call is not None
    assert default_call.json["options"]["num_predict"] == 40
    assert pro_call.json["options"]["num_predict"] == 400
    assert chat(client, who, "free-b").status_code == 429


def test_status_reports_the_limits_of_the_callers_tier(stack: Stack, who: Users) -> None:
    channel, stub = grpc_stub(stack.grpc_address)
    with channel:
        pro = stub.GetStatus(pb.GetStatusRequest(), metadata=who.metadata("pro-b"), timeout=10)
        free = stub.GetStatus(pb.GetStatusRequest(), metadata=who.metadata("free-a"), timeout=10)
    assert (pro.user_limits.tier, pro.user_limits.requests_per_minute) == ("pro", 0)
    assert pro.user_limits.max_output_tokens == 400
    assert (free.user_limits.tier, free.user_limits.requests_per_minute) == ("", 1)
    assert not free.user_budget.HasField("left_today")  # no daily budget
    assert not free.caller_admin
