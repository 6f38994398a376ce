"""AnthropicBridge specifics: its wire format, SSE framing, SDK retries, and FakeAnthropic."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from service.content import Message, TextBlock, ToolResultBlock, ToolUseBlock
from service.errors import Code, ProviderError
from service.providers.accumulate import fold
from service.providers.anthropic import AnthropicBridge
from service.providers.base import CompletionRequest, Stop, TextDelta, ToolCall, ToolSpec
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.script import Reply, ScriptedToolCall
from tests.providers.conftest import ANTHROPIC_KEY, ANTHROPIC_MODEL, RELAXED_S, ask, collect


def make_bridge(fake: FakeAnthropic, **options: object) -> AnthropicBridge:
    settings: dict[str, object] = {
        "api_key": ANTHROPIC_KEY,
        "base_url": fake.url,
        "model": ANTHROPIC_MODEL,
        "max_retries": 0,
        "first_byte_timeout_s": 2,
        "idle_timeout_s": RELAXED_S,
    }
    settings.update(options)
    return AnthropicBridge(**settings)  # type: ignore[arg-type]


@pytest.fixture
async def bridge(fake_anthropic: FakeAnthropic) -> AsyncIterator[AnthropicBridge]:
    bridge = make_bridge(fake_anthropic)
    yield bridge
    await bridge.aclose()


async def test_request_is_the_messages_api_format(fake_anthropic: FakeAnthropic) -> None:
    # Without prompt caching: the breakpoints have tests of their own (test_prompt_caching).
    bridge = make_bridge(fake_anthropic, prompt_caching=False)
    tool = ToolSpec("calc", "Evaluate arithmetic", {"type": "object", "properties": {}})
    request = CompletionRequest(
        messages=[
            Message("user", [TextBlock("what is 2+2?")]),
            Message("assistant", [TextBlock(""), ToolUseBlock("toolu_1", "calc", {"e": "2+2"})]),
            Message("user", [ToolResultBlock("toolu_1", "boom", is_error=True, name="calc")]),
        ],
        system="Be brief.",
        tools=[tool],
        max_tokens=64,
        user_id="user-42",
    )
    await collect(bridge, request)
    sent = fake_anthropic.chats[0]
    assert sent.headers["authorization"] == f"Bearer {ANTHROPIC_KEY}"
    assert sent.headers["anthropic-version"]
    body = sent.json
    assert body["model"] == ANTHROPIC_MODEL
    assert body["max_tokens"] == 64
    assert body["stream"] is True
    assert body["system"] == "Be brief."
    assert body["metadata"] == {"user_id": "user-42"}
    assert body["tools"] == [
        {"name": "calc", "description": "Evaluate arithmetic", "input_schema": tool.parameters}
    ]
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "what is 2+2?"}]},
        # The empty text block is dropped: the API rejects it.
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "calc", "input": {"e": "2+2"}}
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": "boom",
                    "is_error": True,
                }
            ],
        },
    ]
    assert not {"temperature", "top_p", "top_k"} & body.keys()
    await bridge.aclose()


async def test_optional_fields_are_left_out(
    fake_anthropic: FakeAnthropic, bridge: AnthropicBridge
) -> None:
    await collect(bridge, ask())
    body = fake_anthropic.chats[0].json
    assert not {"system", "tools", "metadata", "temperature"} & body.keys()


async def test_text_then_several_tool_calls_in_block_order(
    fake_anthropic: FakeAnthropic, bridge: AnthropicBridge
) -> None:
    fake_anthropic.push(
        Reply(
            chunks=("Checking", " both."),
            tool_calls=(
                ScriptedToolCall("weather", {"city": "Oslo"}),
                ScriptedToolCall("weather", {"city": "Lima", "days": [1, 2]}, id="toolu_given"),
            ),
        )
    )
    events = await collect(bridge, ask())
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["TextDelta", "TextDelta", "ToolCall", "ToolCall", "Usage", "Stop"]
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert [c.arguments for c in calls] == [{"city": "Oslo"}, {"city": "Lima", "days": [1, 2]}]
    assert calls[1].id == "toolu_given"
    assert events[-1] == Stop("tool_use")


@pytest.mark.parametrize(
    ("vendor_reason", "expected"),
    [
        ("max_tokens", "max_tokens"),
        ("stop_sequence", "stop_sequence"),
        ("refusal", "refusal"),
        ("model_context_window_exceeded", "max_tokens"),
        ("pause_turn", "other"),
    ],
)
async def test_stop_reasons_are_normalized(
    fake_anthropic: FakeAnthropic, bridge: AnthropicBridge, vendor_reason: str, expected: str
) -> None:
    fake_anthropic.push(Reply.text("x", stop_reason=vendor_reason))
    assert (await collect(bridge, ask()))[-1] == Stop(expected)  # type: ignore[arg-type]


SPLITS = [
    {"split": 1},
    {"split": 3},
    {"split": "random", "split_seed": 1},
    {"split": "random", "split_seed": 7},
    {"lines_per_write": 4},
    {"lines_per_write": 100},
]


@pytest.mark.parametrize("framing", SPLITS, ids=[str(s) for s in SPLITS])
async def test_sse_parses_the_same_at_any_byte_boundary(
    fake_anthropic: FakeAnthropic, bridge: AnthropicBridge, framing: dict[str, object]
) -> None:
    script = {
        "chunks": ("Hé", "llo ", "wörld", " ✓ 日本"),
        "tool_calls": (
            ScriptedToolCall("t", {"k": "v", "n": [1, 2, {"deep": "é"}]}, id="toolu_1"),
        ),
    }
    fake_anthropic.push(Reply(**script), Reply(**script, **framing))  # type: ignore[arg-type]
    plain = await collect(bridge, ask())
    framed = await collect(bridge, ask())
    assert framed == plain
    assert fold(plain).text == "Héllo wörld ✓ 日本"


@pytest.mark.parametrize(
    ("error_type", "code"),
    [
        ("overloaded_error", Code.UNAVAILABLE),
        ("api_error", Code.UNAVAILABLE),
        ("rate_limit_error", Code.RESOURCE_EXHAUSTED),
        ("invalid_request_error", Code.INVALID_ARGUMENT),
    ],
)
async def test_error_event_after_200_maps_by_its_type(
    fake_anthropic: FakeAnthropic, bridge: AnthropicBridge, error_type: str, code: Code
) -> None:
    fake_anthropic.push(
        Reply.text("a", "b", fail_after=1, fail_type=error_type, fail_message="nope")
    )
    seen: list[object] = []
    with pytest.raises(ProviderError) as caught:
        async for event in bridge.stream(ask()):
            seen.append(event)
    assert seen == [TextDelta("a")]
    assert caught.value.code == code
    assert "nope" in caught.value.message
    assert "mid-stream" in caught.value.message


async def test_overload_is_retried_then_succeeds(fake_anthropic: FakeAnthropic) -> None:
    fast = {"retry-after-ms": "10"}
    fake_anthropic.push(
        Reply.error(529, headers=fast), Reply.error(429, headers=fast), Reply.text("finally")
    )
    bridge = make_bridge(fake_anthropic, max_retries=2)
    try:
        turn = fold(await collect(bridge, ask()))
    finally:
        await bridge.aclose()
    assert turn.text == "finally"
    assert len(fake_anthropic.chats) == 3


async def test_gives_up_after_max_retries(fake_anthropic: FakeAnthropic) -> None:
    fast = {"retry-after-ms": "10"}
    fake_anthropic.push(Reply.error(529, headers=fast), Reply.error(529, headers=fast))
    bridge = make_bridge(fake_anthropic, max_retries=1)
    try:
        with pytest.raises(ProviderError) as caught:
            await collect(bridge, ask())
    finally:
        await bridge.aclose()
    assert caught.value.code == Code.UNAVAILABLE
    assert caught.value.retry_after_s == 0.01
    assert len(fake_anthropic.chats) == 2


@pytest.mark.parametrize(
    ("status", "code"), [(429, Code.RESOURCE_EXHAUSTED), (529, Code.UNAVAILABLE)]
)
async def test_a_long_retry_hint_is_passed_on_at_once_not_slept_through(
    fake_anthropic: FakeAnthropic, status: int, code: Code
) -> None:
    # The hint is far longer than the first-byte timeout: sleeping through it (as the SDK's
    # own retries would) ends as a first-byte timeout that loses the hint.
    fake_anthropic.push(Reply.error(status, headers={"retry-after": "30"}), Reply.text("late"))
    bridge = make_bridge(fake_anthropic, max_retries=2, first_byte_timeout_s=1.0)
    try:
        with pytest.raises(ProviderError) as caught:
            await collect(bridge, ask())
    finally:
        await bridge.aclose()
    assert caught.value.code == code
    assert caught.value.retry_after_s == 30.0
    assert len(fake_anthropic.chats) == 1


async def test_a_short_hint_that_outlasts_the_first_byte_deadline_is_passed_on(
    fake_anthropic: FakeAnthropic,
) -> None:
    fake_anthropic.push(Reply.error(429, headers={"retry-after": "3"}), Reply.text("late"))
    bridge = make_bridge(fake_anthropic, max_retries=2, first_byte_timeout_s=1.0)
    try:
        with pytest.raises(ProviderError) as caught:
            await collect(bridge, ask())
    finally:
        await bridge.aclose()
    assert caught.value.code == Code.RESOURCE_EXHAUSTED
    assert caught.value.retry_after_s == 3.0
    assert len(fake_anthropic.chats) == 1


async def test_client_errors_are_not_retried(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.push(Reply.error(400, "bad"), Reply.text("never"))
    bridge = make_bridge(fake_anthropic, max_retries=3)
    try:
        with pytest.raises(ProviderError):
            await collect(bridge, ask())
    finally:
        await bridge.aclose()
    assert len(fake_anthropic.chats) == 1


async def test_nothing_is_retried_once_the_stream_started(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.push(Reply.text("a", "b", fail_after=1), Reply.text("never"))
    bridge = make_bridge(fake_anthropic, max_retries=3)
    try:
        with pytest.raises(ProviderError):
            await collect(bridge, ask())
    finally:
        await bridge.aclose()
    assert len(fake_anthropic.chats) == 1


async def test_wrong_key_is_a_server_side_precondition(fake_anthropic: FakeAnthropic) -> None:
    bridge = make_bridge(fake_anthropic, api_key="sk-wrong")
    try:
        with pytest.raises(ProviderError) as caught:
            await collect(bridge, ask())
        health = await bridge.probe()
    finally:
        await bridge.aclose()
    assert caught.value.code == Code.FAILED_PRECONDITION
    assert "ANTHROPIC_API_KEY" in caught.value.message
    assert not health.reachable
    assert "ANTHROPIC_API_KEY" in health.detail


async def test_missing_key_fails_without_calling_out(fake_anthropic: FakeAnthropic) -> None:
    bridge = make_bridge(fake_anthropic, api_key=None)
    try:
        with pytest.raises(ProviderError) as caught:
            await collect(bridge, ask())
        health = await bridge.probe()
    finally:
        await bridge.aclose()
    assert caught.value.code == Code.FAILED_PRECONDITION
    assert not health.reachable
    assert fake_anthropic.requests == []


async def test_probe_reports_an_unknown_model(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.models = {"claude-other"}
    bridge = make_bridge(fake_anthropic)
    try:
        health = await bridge.probe()
    finally:
        await bridge.aclose()
    assert health.reachable
    assert health.model_available is False
    assert ANTHROPIC_MODEL in health.detail
    assert fake_anthropic.requests[0].path == f"/v1/models/{ANTHROPIC_MODEL}"


# --- FakeAnthropic itself ------------------------------------------------------


async def test_fake_accepts_x_api_key_and_serves_the_other_endpoints(
    fake_anthropic: FakeAnthropic,
) -> None:
    headers = {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}
    # not the gateway: the fake provider
    async with httpx.AsyncClient(base_url=fake_anthropic.url, headers=headers) as client:
        fake_anthropic.push(Reply.text("a", "b", tool_calls=(ScriptedToolCall("t", {"q": 1}),)))
        whole = await client.post(
            "/v1/messages",
            json={"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
        )
        count = await client.post(
            "/v1/messages/count_tokens",
            json={"model": "m", "messages": [{"role": "user", "content": "one two three"}]},
        )
        model = await client.get("/v1/models/claude-x")
        missing = await client.post("/v1/messages", json={"model": "m", "messages": []})
    body = whole.json()
    assert body["type"] == "message"
    assert body["content"][0] == {"type": "text", "text": "ab"}
    assert body["content"][1]["input"] == {"q": 1}
    assert body["stop_reason"] == "tool_use"
    assert count.json() == {"input_tokens": 3}
    assert model.json()["id"] == "claude-x"
    assert missing.status_code == 400
    assert missing.json()["error"]["type"] == "invalid_request_error"


async def test_fake_rejects_a_missing_key(fake_anthropic: FakeAnthropic) -> None:
    # not the gateway: the fake provider
    async with httpx.AsyncClient(base_url=fake_anthropic.url) as client:
        response = await client.post("/v1/messages", json={})
    assert response.status_code == 401
    assert response.json() == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid x-api-key"},
    }


async def test_fake_streams_named_events_in_order(fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.push(
        Reply(chunks=("a", "b", "c"), tool_calls=(ScriptedToolCall("t", {"k": 1}),))
    )
    # not the gateway: the fake provider
    async with httpx.AsyncClient(
        base_url=fake_anthropic.url, headers={"authorization": f"Bearer {ANTHROPIC_KEY}"}
    ) as client:
        response = await client.post(
            "/v1/messages",
            json={"model": "m", "max_tokens": 5, "messages": [], "stream": True},
        )
    names = [line[7:] for line in response.text.splitlines() if line.startswith("event: ")]
    assert names[0] == "message_start"
    assert names[-2:] == ["message_delta", "message_stop"]
    assert "ping" in names
    assert names.count("content_block_start") == names.count("content_block_stop") == 2
