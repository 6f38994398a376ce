"""The provider contract, run against both bridges with their fakes."""

from __future__ import annotations

import asyncio
import time

import pytest

from service.content import Message, TextBlock, ToolResultBlock, ToolUseBlock, Usage
from service.errors import Code, DeadlineExceeded, ProviderError
from service.providers.accumulate import fold
from service.providers.base import CompletionRequest, Stop, TextDelta, ToolCall, ToolSpec
from tests.fakes.script import Reply
from tests.ports import free_port
from tests.providers.conftest import FIRST_BYTE_S, IDLE_S, Harness, ask, collect

WEATHER = ToolSpec(
    name="get_weather",
    description="Current weather for a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


async def test_text_streams_in_order_then_usage_and_stop(harness: Harness) -> None:
    harness.fake.push(Reply.text("Hel", "lo", " world", input_tokens=7, output_tokens=3))
    events = await collect(harness.bridge(), ask())
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert deltas == ["Hel", "lo", " world"]
    assert Usage(input_tokens=7, output_tokens=3) in events
    assert events[-1] == Stop("end_turn")
    assert sum(isinstance(e, Stop) for e in events) == 1


async def test_default_fake_reply_echoes_the_user(harness: Harness) -> None:
    turn = fold(await collect(harness.bridge(), ask("ping me back")))
    assert turn.text == "echo: ping me back"
    assert turn.stop_reason == "end_turn"


async def test_each_delta_is_yielded_before_the_next_arrives(harness: Harness) -> None:
    harness.fake.push(Reply.text("a", "b", "c", chunk_delay_s=0.15))
    stream = harness.bridge().stream(ask())
    first = await anext(stream)
    assert first == TextDelta("a")
    # The fake is still sleeping before chunk "b": nothing was buffered.
    assert harness.chats[0].finished_at is None
    rest = [e async for e in stream]
    assert [e.text for e in rest if isinstance(e, TextDelta)] == ["b", "c"]


async def test_request_model_overrides_the_configured_one(harness: Harness) -> None:
    if harness.vendor == "ollama":
        harness.fake.models.append("qwen3:latest")
    await collect(harness.bridge(), ask(model="qwen3"))
    assert harness.chats[0].json["model"] == "qwen3"


async def test_tool_round_trip_in_the_vendors_format(harness: Harness) -> None:
    bridge = harness.bridge()
    harness.fake.push(
        Reply.tool("get_weather", {"city": "Tokyo", "units": {"temp": "C"}}),
        Reply.text("It is ", "sunny."),
    )
    first = await collect(bridge, ask("weather in Tokyo?", tools=[WEATHER]))
    calls = [e for e in first if isinstance(e, ToolCall)]
    assert len(calls) == 1
    call = calls[0]
    assert call.name == "get_weather"
    assert call.arguments == {"city": "Tokyo", "units": {"temp": "C"}}
    assert call.id
    assert first[-1] == Stop("tool_use")

    follow_up = CompletionRequest(
        messages=[
            Message("user", [TextBlock("weather in Tokyo?")]),
            Message("assistant", [ToolUseBlock(call.id, call.name, call.arguments)]),
            Message("user", [ToolResultBlock(call.id, "sunny, 21 C", name="get_weather")]),
        ],
        tools=[WEATHER],
    )
    second = fold(await collect(bridge, follow_up))
    assert second.text == "It is sunny."
    assert second.stop_reason == "end_turn"

    sent = harness.chats[1].json["messages"]
    if harness.vendor == "anthropic":
        assert sent[1] == {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": call.id,
                    "name": "get_weather",
                    "input": {"city": "Tokyo", "units": {"temp": "C"}},
                }
            ],
        }
        assert sent[2]["content"][0]["type"] == "tool_result"
        assert sent[2]["content"][0]["tool_use_id"] == call.id
        assert sent[2]["content"][0]["content"] == "sunny, 21 C"
    else:
        assert sent[1]["role"] == "assistant"
        assert sent[1]["tool_calls"] == [
            {
                "function": {
                    "name": "get_weather",
                    "arguments": {"city": "Tokyo", "units": {"temp": "C"}},
                }
            }
        ]
        assert sent[2] == {"role": "tool", "content": "sunny, 21 C", "tool_name": "get_weather"}


ERROR_CASES = [
    # (status, headers, expected code, expected retry_after_s)
    (401, {}, Code.FAILED_PRECONDITION, None),
    (403, {}, Code.FAILED_PRECONDITION, None),
    (400, {}, Code.INVALID_ARGUMENT, None),
    (413, {}, Code.INVALID_ARGUMENT, None),
    (429, {"retry-after": "7"}, Code.RESOURCE_EXHAUSTED, 7.0),
    (429, {"retry-after-ms": "1500"}, Code.RESOURCE_EXHAUSTED, 1.5),
    (429, {}, Code.RESOURCE_EXHAUSTED, None),
    (500, {}, Code.UNAVAILABLE, None),
    (502, {}, Code.UNAVAILABLE, None),
]


@pytest.mark.parametrize(("status", "headers", "code", "retry_after"), ERROR_CASES)
async def test_http_errors_map_to_codes(
    harness: Harness, status: int, headers: dict[str, str], code: Code, retry_after: float | None
) -> None:
    harness.fake.push(Reply.error(status, "upstream says no", headers=headers))
    with pytest.raises(ProviderError) as caught:
        await collect(harness.bridge(), ask())
    assert caught.value.code == code
    assert caught.value.retry_after_s == retry_after
    if status in (400, 413):
        assert "upstream says no" in caught.value.message
    if status in (401, 403):
        assert "key" in caught.value.message.lower() or "credentials" in caught.value.message


async def test_overloaded_is_unavailable_with_a_retry_hint(harness: Harness) -> None:
    status = 529 if harness.vendor == "anthropic" else 503
    harness.fake.push(Reply.error(status), Reply.error(status, headers={"retry-after": "4"}))
    bridge = harness.bridge()
    for expected in (None, 4.0):
        with pytest.raises(ProviderError) as caught:
            await collect(bridge, ask())
        assert caught.value.code == Code.UNAVAILABLE
        assert caught.value.retry_after_s is not None
        assert 0 < caught.value.retry_after_s <= 5
        if expected is not None:
            assert caught.value.retry_after_s == expected


async def test_unknown_model_is_not_found_and_named(harness: Harness) -> None:
    harness.fake.models = ["llama3.2:latest"] if harness.vendor == "ollama" else {"claude-test-1"}
    with pytest.raises(ProviderError) as caught:
        await collect(harness.bridge(model="no-such-model"), ask())
    assert caught.value.code == Code.NOT_FOUND
    assert "no-such-model" in caught.value.message
    if harness.vendor == "ollama":
        assert "ollama pull no-such-model" in caught.value.message


async def test_mid_stream_error_comes_after_the_deltas(harness: Harness) -> None:
    harness.fake.push(Reply.text("one", "two", "three", fail_after=2, fail_message="runner died"))
    seen: list[object] = []
    with pytest.raises(ProviderError) as caught:
        async for event in harness.bridge().stream(ask()):
            seen.append(event)
    assert seen == [TextDelta("one"), TextDelta("two")]
    assert caught.value.code == Code.UNAVAILABLE
    assert "runner died" in caught.value.message


@pytest.mark.parametrize("cleanly", [False, True], ids=["dropped", "ended"])
async def test_truncated_stream_is_an_error_after_the_deltas(
    harness: Harness, cleanly: bool
) -> None:
    harness.fake.push(Reply.text("one", "two", "three", truncate_after=2, truncate_cleanly=cleanly))
    seen: list[object] = []
    with pytest.raises(ProviderError) as caught:
        async for event in harness.bridge().stream(ask()):
            seen.append(event)
    assert seen == [TextDelta("one"), TextDelta("two")]
    assert caught.value.code == Code.UNAVAILABLE
    assert "ended early" in caught.value.message


async def test_hang_mid_stream_hits_the_idle_timeout(harness: Harness) -> None:
    harness.fake.push(Reply.text("one", "two", hang_after=1))
    seen: list[object] = []
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded) as caught:
        async for event in harness.bridge(idle_timeout_s=IDLE_S).stream(ask()):
            seen.append(event)
    elapsed = time.monotonic() - started
    assert seen == [TextDelta("one")]
    assert IDLE_S * 0.9 <= elapsed < IDLE_S + 3
    assert "idle_timeout_s" in caught.value.message
    assert await harness.fake.disconnected(0, timeout=2)


async def test_idle_timeout_is_per_gap_not_per_stream(harness: Harness) -> None:
    # Five gaps of 0.3 s under a 1 s idle timeout: longer than it in total, never idle that
    # long (0.7 s to spare per gap, for a loaded machine).
    harness.fake.push(Reply.text("a", "b", "c", "d", "e", chunk_delay_s=0.3))
    turn = fold(await collect(harness.bridge(idle_timeout_s=1.0), ask()))
    assert turn.text == "abcde"


async def test_a_slow_consumer_is_not_an_idle_upstream(harness: Harness) -> None:
    harness.fake.push(Reply.text("a", "b", "c"))
    texts = []
    async for event in harness.bridge(idle_timeout_s=IDLE_S).stream(ask()):
        if isinstance(event, TextDelta):
            texts.append(event.text)
            await asyncio.sleep(IDLE_S * 1.3)
    assert texts == ["a", "b", "c"]


async def test_the_connection_is_reused_between_calls(harness: Harness) -> None:
    bridge = harness.bridge()
    for _ in range(3):
        await collect(bridge, ask())
    assert [r.disconnected_at for r in harness.chats] == [None, None, None]
    assert all(r.finished_at is not None for r in harness.chats)
    assert harness.fake.connections_opened == 1


async def test_silence_before_the_first_byte_hits_the_first_byte_timeout(
    harness: Harness,
) -> None:
    harness.fake.push(Reply.text("late", initial_delay_s=5))
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded) as caught:
        await collect(harness.bridge(first_byte_timeout_s=FIRST_BYTE_S), ask())
    assert time.monotonic() - started < 3
    assert "first_byte_timeout_s" in caught.value.message
    assert await harness.fake.disconnected(0, timeout=2)


async def test_cancelling_the_consumer_closes_the_upstream_connection(harness: Harness) -> None:
    harness.fake.push(Reply.text(*["tok"] * 50, chunk_delay_s=0.05))
    bridge = harness.bridge()
    got_first = asyncio.Event()

    async def consume() -> None:
        async for _event in bridge.stream(ask()):
            got_first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_first.wait(), 5)
    cancelled_at = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await harness.fake.disconnected(0, timeout=2)
    record = harness.chats[0]
    assert record.disconnected_at is not None
    assert record.disconnected_at - cancelled_at < 0.25


async def test_closing_the_generator_closes_the_upstream_connection(harness: Harness) -> None:
    harness.fake.push(Reply.text(*["tok"] * 50, chunk_delay_s=0.05))
    stream = harness.bridge().stream(ask())
    assert isinstance(await anext(stream), TextDelta)
    closed_at = time.monotonic()
    await stream.aclose()  # type: ignore[attr-defined]
    assert await harness.fake.disconnected(0, timeout=2)
    assert harness.chats[0].disconnected_at - closed_at < 0.25  # type: ignore[operator]


async def test_connection_refused_names_the_url(harness: Harness) -> None:
    port = free_port()  # a port nothing listens on
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(ProviderError) as caught:
        await collect(harness.bridge(url=url), ask())
    assert caught.value.code == Code.UNAVAILABLE
    assert url in caught.value.message
    assert "refused" in caught.value.message


async def test_concurrent_streams_are_all_served(harness: Harness) -> None:
    harness.fake.responder = lambda request: Reply.text("x", "y", chunk_delay_s=0.05)
    bridge = harness.bridge()
    turns = await asyncio.gather(*(collect(bridge, ask(f"n{i}")) for i in range(4)))
    assert all(fold(t).text == "xy" for t in turns)
    assert harness.fake.max_in_flight == 4
    # The fake's thread finishes its handlers just after the last bytes leave.
    assert await harness.fake.wait_until(lambda: harness.fake.in_flight == 0)


async def test_probe_reports_a_reachable_provider(harness: Harness) -> None:
    health = await harness.bridge().probe()
    assert health.reachable
    assert health.model_available is True
    assert health.detail


async def test_probe_of_an_unreachable_provider_does_not_raise(harness: Harness) -> None:
    port = free_port()
    health = await harness.bridge(url=f"http://127.0.0.1:{port}").probe()
    assert not health.reachable
    assert f"127.0.0.1:{port}" in health.detail
