"""One short real call per provider; skipped unless OLLAMA_URL / ANTHROPIC_API_KEY is set."""

from __future__ import annotations

import os

import pytest

from service.providers.accumulate import afold
from service.providers.anthropic import AnthropicBridge
from service.providers.ollama import OllamaBridge
from tests.providers.conftest import ask

pytestmark = pytest.mark.live


@pytest.mark.skipif(not os.environ.get("OLLAMA_URL"), reason="OLLAMA_URL is not set")
async def test_live_ollama_short_answer() -> None:
    bridge = OllamaBridge(
        url=os.environ["OLLAMA_URL"], model=os.environ.get("OLLAMA_MODEL", "llama3.2")
    )
    try:
        turn = await afold(bridge.stream(ask("Reply with the single word: pong", max_tokens=16)))
    finally:
        await bridge.aclose()
    assert turn.text.strip()
    assert turn.stop_reason in ("end_turn", "max_tokens")
    assert turn.usage.output_tokens > 0


@pytest.mark.skipif(not os.environ.get("ANTHROPIC_API_KEY"), reason="ANTHROPIC_API_KEY is not set")
async def test_live_anthropic_short_answer() -> None:
    bridge = AnthropicBridge(
        api_key=os.environ["ANTHROPIC_API_KEY"],
        base_url=os.environ.get("ANTHROPIC_BASE_URL"),
        model=os.environ.get("AGENT_ANTHROPIC__MODEL", "claude-haiku-4-5"),
    )
    try:
        turn = await afold(bridge.stream(ask("Reply with the single word: pong", max_tokens=16)))
    finally:
        await bridge.aclose()
    assert turn.text.strip()
    assert turn.stop_reason in ("end_turn", "max_tokens")
    assert turn.usage.input_tokens > 0
