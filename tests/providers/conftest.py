"""Fixtures: each bridge paired with its fake, for the contract suite run over both."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from service.content import Message, TextBlock
from service.providers.base import CompletionRequest, Provider, ProviderEvent
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.ollama import FakeOllama
from tests.fakes.server import LoopbackServer, RecordedRequest

OLLAMA_MODEL = "llama3.2"
ANTHROPIC_MODEL = "claude-test-1"
ANTHROPIC_KEY = "sk-test-key"
# The timeouts of the tests that hit them: short enough to keep those tests fast.
IDLE_S = 0.3
FIRST_BYTE_S = 0.3
# Every other bridge's: a bound on a hang, never reached when all is well, even on a
# loaded machine (tests run in parallel there) where a fake can stall for a second.
RELAXED_S = 5.0


def ask(text: str = "hello there", **options: Any) -> CompletionRequest:
    return CompletionRequest(messages=[Message("user", [TextBlock(text)])], **options)


async def collect(provider: Provider, request: CompletionRequest) -> list[ProviderEvent]:
    return [event async for event in provider.stream(request)]


@dataclass
class Harness:
    """One bridge type and its fake: builds bridges pointed at the fake, closes them after."""

    vendor: str
    fake: Any  # FakeOllama | FakeAnthropic
    chat_path: str
    model: str
    bridges: list[Provider] = field(default_factory=list)

    def bridge(self, **overrides: Any) -> Provider:
        from service.providers.ollama import OllamaBridge

        options: dict[str, Any] = {"first_byte_timeout_s": RELAXED_S, "idle_timeout_s": RELAXED_S}
        options.update(overrides)
        url = options.pop("url", self.fake.url)
        provider: Provider
        if self.vendor == "ollama":
            provider = OllamaBridge(url=url, model=options.pop("model", self.model), **options)
        else:
            from service.providers.anthropic import AnthropicBridge

            options.setdefault("max_retries", 0)
            provider = AnthropicBridge(
                api_key=options.pop("api_key", ANTHROPIC_KEY),
                base_url=url,
                model=options.pop("model", self.model),
                **options,
            )
        self.bridges.append(provider)
        return provider

    @property
    def chats(self) -> list[RecordedRequest]:
        return self.fake.calls(self.chat_path)


@pytest.fixture
def fake_ollama() -> Iterator[FakeOllama]:
    with FakeOllama() as fake:
        yield fake


@pytest.fixture
def fake_anthropic() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key=ANTHROPIC_KEY) as fake:
        yield fake


@pytest.fixture(params=["ollama", "anthropic"])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    fake: LoopbackServer
    if request.param == "ollama":
        fake = FakeOllama()
        h = Harness("ollama", fake, "/api/chat", OLLAMA_MODEL)
    else:
        fake = FakeAnthropic(api_key=ANTHROPIC_KEY)
        h = Harness("anthropic", fake, "/v1/messages", ANTHROPIC_MODEL)
    with fake:
        try:
            yield h
        finally:
            for provider in h.bridges:
                await provider.aclose()
