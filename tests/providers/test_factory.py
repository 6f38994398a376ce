"""build_provider picks and configures a bridge from plain values."""

from __future__ import annotations

import pytest

from service.providers.anthropic import AnthropicBridge
from service.providers.factory import build_provider
from service.providers.ollama import OllamaBridge


async def test_builds_ollama() -> None:
    provider = build_provider("ollama", ollama_url="http://h:1/", ollama_model="qwen3")
    try:
        assert isinstance(provider, OllamaBridge)
        assert (provider.name, provider.model, provider.url) == ("ollama", "qwen3", "http://h:1")
    finally:
        await provider.aclose()


async def test_builds_anthropic() -> None:
    provider = build_provider(
        "anthropic",
        anthropic_api_key="k",
        anthropic_model="claude-x",
        anthropic_base_url="http://a",
    )
    try:
        assert isinstance(provider, AnthropicBridge)
        assert (provider.name, provider.model, provider.url) == (
            "anthropic",
            "claude-x",
            "http://a",
        )
    finally:
        await provider.aclose()


@pytest.mark.parametrize(("key", "expected"), [("k", AnthropicBridge), (None, OllamaBridge)])
async def test_auto_prefers_anthropic_when_a_key_is_set(key: str | None, expected: type) -> None:
    provider = build_provider("auto", anthropic_api_key=key)
    try:
        assert isinstance(provider, expected)
    finally:
        await provider.aclose()


def test_anthropic_without_a_key_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="ANTHROPIC_API_KEY"):
        build_provider("anthropic")


def test_unknown_provider_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown provider"):
        build_provider("openai")
