"""Prompt caching: the Anthropic bridge's breakpoints and cache usage, and the fakes' caches."""

from __future__ import annotations

from typing import Any

from service.content import Message, TextBlock, ToolResultBlock, ToolUseBlock, Usage
from service.providers.anthropic import AnthropicBridge
from service.providers.base import CompletionRequest, ToolSpec
from service.providers.ollama import OllamaBridge
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.ollama import FakeOllama
from tests.fakes.prompt_cache import AnthropicPromptCache
from tests.providers.conftest import ANTHROPIC_KEY, ANTHROPIC_MODEL, OLLAMA_MODEL, collect

TOOL = ToolSpec("clock", "The time", {"type": "object", "properties": {}})
LONG = "word " * 1200  # ~1,500 tokens at four characters a token: over the cacheable minimum


def anthropic_bridge(fake: FakeAnthropic, **options: Any) -> AnthropicBridge:
    return AnthropicBridge(
        api_key=ANTHROPIC_KEY, base_url=fake.url, model=ANTHROPIC_MODEL, max_retries=0, **options
    )


def conversation(turns: int) -> list[Message]:
    messages: list[Message] = []
    for number in range(turns):
        messages.append(Message("user", [TextBlock(f"question {number} {LONG}")]))
        messages.append(Message("assistant", [TextBlock(f"answer {number}")]))
    messages.append(Message("user", [TextBlock("and now?")]))
    return messages


def usage_of(events: list[Any]) -> Usage:
    (usage,) = [e for e in events if isinstance(e, Usage)]
    return usage


async def test_breakpoints_mark_the_system_prompt_and_the_end_of_the_history(
    fake_anthropic: FakeAnthropic,
) -> None:
    bridge = anthropic_bridge(fake_anthropic)
    messages = [
        *conversation(1),
        Message("assistant", [ToolUseBlock("t1", "clock", {})]),
        Message("user", [ToolResultBlock("t1", "noon", name="clock")]),
    ]
    request = CompletionRequest(messages=messages, system="Be brief.", tools=[TOOL])
    try:
        await collect(bridge, request)
    finally:
        await bridge.aclose()
    body = fake_anthropic.chats[0].json
    ephemeral = {"type": "ephemeral"}
    assert body["system"] == [{"type": "text", "text": "Be brief.", "cache_control": ephemeral}]
    assert "cache_control" not in body["tools"][0]  # the system breakpoint covers the tools
    marked = [
        (index, block["type"])
        for index, message in enumerate(body["messages"])
        for block in message["content"]
        if "cache_control" in block
    ]
    # The newest message (tool results), and the user message before it (where the
    # previous call of this conversation put its rolling breakpoint).
    assert marked == [(2, "text"), (4, "tool_result")]


async def test_without_a_system_prompt_the_last_tool_is_marked(
    fake_anthropic: FakeAnthropic,
) -> None:
    bridge = anthropic_bridge(fake_anthropic)
    try:
        await collect(bridge, CompletionRequest(messages=conversation(0), tools=[TOOL, TOOL]))
    finally:
        await bridge.aclose()
    body = fake_anthropic.chats[0].json
    assert [("cache_control" in tool) for tool in body["tools"]] == [False, True]
    assert "system" not in body


async def test_a_conversation_reads_its_history_from_the_cache(
    fake_anthropic: FakeAnthropic,
) -> None:
    bridge = anthropic_bridge(fake_anthropic)
    history = conversation(2)
    try:
        first = usage_of(await collect(bridge, CompletionRequest(messages=history, system="s")))
        grown = [
            *history,
            Message("assistant", [TextBlock("ok")]),
            Message("user", [TextBlock("more")]),
        ]
        second = usage_of(await collect(bridge, CompletionRequest(messages=grown, system="s")))
    finally:
        await bridge.aclose()
    # The first call writes its whole prompt; the next reads all of it back.
    assert first.cache_read_input_tokens == 0
    assert first.cache_creation_input_tokens > 3000
    assert second.cache_read_input_tokens == (
        first.cache_creation_input_tokens + first.input_tokens
    )
    assert second.cache_creation_input_tokens > 0 and second.input_tokens == 0


async def test_caching_off_sends_no_breakpoint_and_reads_nothing(
    fake_anthropic: FakeAnthropic,
) -> None:
    bridge = anthropic_bridge(fake_anthropic, prompt_caching=False)
    request = CompletionRequest(messages=conversation(2), system="s", tools=[TOOL])
    try:
        usages = [usage_of(await collect(bridge, request)) for _ in range(2)]
    finally:
        await bridge.aclose()
    assert "cache_control" not in str(fake_anthropic.chats[0].json)
    assert usages[0] == usages[1]
    assert usages[1].cache_read_input_tokens == usages[1].cache_creation_input_tokens == 0


def cached_body(text: str, *, marked: bool = True) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": text}
    if marked:
        block["cache_control"] = {"type": "ephemeral"}
    return {"model": "m", "messages": [{"role": "user", "content": [block]}]}


def test_the_fake_cache_skips_short_prefixes_and_expires_after_five_minutes() -> None:
    now = [0.0]
    cache = AnthropicPromptCache(clock=lambda: now[0])
    short = cached_body("tiny " * 100)
    assert cache.account(short).cache_creation_input_tokens == 0  # under 1,024 tokens
    assert cache.account(short).cache_read_input_tokens == 0
    body = cached_body(LONG)
    written = cache.account(body)
    assert (written.cache_creation_input_tokens, written.input_tokens) == (1500, 0)
    now[0] = 299.0
    assert cache.account(body).cache_read_input_tokens == 1500  # a hit refreshes it...
    now[0] = 598.0
    assert cache.account(body).cache_read_input_tokens == 1500  # ...so it lives on
    now[0] = 898.5
    expired = cache.account(body)
    assert (expired.cache_read_input_tokens, expired.cache_creation_input_tokens) == (0, 1500)


def test_the_fake_cache_looks_back_twenty_blocks_from_a_breakpoint() -> None:
    cache = AnthropicPromptCache()
    head = [{"type": "text", "text": LONG, "cache_control": {"type": "ephemeral"}}]

    def body(extra: int) -> dict[str, Any]:
        tail: list[dict[str, Any]] = [{"type": "text", "text": f"b{i}"} for i in range(extra)]
        if tail:
            tail[-1]["cache_control"] = {"type": "ephemeral"}
        content = [{k: v for k, v in head[0].items() if k != "cache_control" or not tail}]
        return {"model": "m", "messages": [{"role": "user", "content": content + tail}]}

    cache.account(body(0))  # caches the head alone
    assert cache.account(body(20)).cache_read_input_tokens == 1500  # 20 blocks back: found
    fresh = AnthropicPromptCache()
    fresh.account(body(0))
    assert fresh.account(body(21)).cache_read_input_tokens == 0  # 21 back: out of reach


async def test_fake_ollama_evaluates_only_what_its_slot_has_not_seen(
    fake_ollama: FakeOllama,
) -> None:
    bridge = OllamaBridge(url=fake_ollama.url, model=OLLAMA_MODEL)
    first = [Message("user", [TextBlock("one two three four")])]
    grown = [*first, Message("assistant", [TextBlock("five")]), Message("user", [TextBlock("six")])]
    other = [Message("user", [TextBlock("seven eight")])]
    try:
        counts = [
            usage_of(await collect(bridge, CompletionRequest(messages=m))).input_tokens
            for m in (first, grown, other, grown)
        ]
    finally:
        await bridge.aclose()
    # Role markers count as a token each: 5, then the 4 new ones, then 2 (only the
    # leading <user> is shared), then 8 (the slot now holds the other prompt).
    assert counts == [5, 4, 2, 8]


async def test_the_setting_reaches_the_bridge(fake_anthropic: FakeAnthropic) -> None:
    from service.config import Settings
    from service.server import build_providers

    for caching in (True, False):
        settings = Settings(
            api={"provider": "anthropic"},
            anthropic={
                "api_key": ANTHROPIC_KEY,
                "base_url": fake_anthropic.url,
                "prompt_caching": caching,
            },
        )
        bridge = build_providers(settings)["anthropic"]
        try:
            await collect(bridge, CompletionRequest(messages=conversation(0), system="s"))
        finally:
            await bridge.aclose()
        assert ("cache_control" in str(fake_anthropic.chats[-1].json)) is caching


async def test_a_one_off_request_writes_nothing_to_the_cache(
    fake_anthropic: FakeAnthropic,
) -> None:
    """A history summary's prompt is never sent again: no breakpoint, no 1.25x write."""
    bridge = anthropic_bridge(fake_anthropic)
    request = CompletionRequest(
        messages=conversation(2), system="Summarize.", max_tokens=64, cacheable=False
    )
    try:
        usage = usage_of(await collect(bridge, request))
    finally:
        await bridge.aclose()
    body = fake_anthropic.chats[0].json
    assert "cache_control" not in str(body)
    assert body["system"] == "Summarize."
    assert usage.cache_creation_input_tokens == usage.cache_read_input_tokens == 0
    assert usage.input_tokens > 0
