"""Fixtures for end-to-end tests: fakes in this process, the stack in subprocesses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.stack import Stack
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.ollama import FakeOllama

ANTHROPIC_KEY = "sk-test-e2e"


def provider_config(provider: str, ollama: FakeOllama, anthropic: FakeAnthropic | None) -> dict:
    config: dict = {
        "api": {"provider": provider},
        "ollama": {"url": ollama.url, "model": "llama3.2"},
    }
    if anthropic is not None:
        config["anthropic"] = {
            "api_key": ANTHROPIC_KEY,
            "base_url": anthropic.url,
            "model": "claude-test",
            "max_retries": 0,
        }
    return config


@pytest.fixture(scope="module")
def fake_ollama() -> Iterator[FakeOllama]:
    with FakeOllama() as fake:
        yield fake


@pytest.fixture(scope="module")
def fake_anthropic() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key=ANTHROPIC_KEY) as fake:
        yield fake


def launch(tmp: Path, config: dict, env: dict[str, str] | None = None) -> Stack:
    stack = Stack(tmp, config, env or {})
    try:
        stack.start()
    except Exception:
        stack.stop()
        raise
    return stack


@pytest.fixture(scope="module")
def ollama_stack(
    tmp_path_factory: pytest.TempPathFactory, fake_ollama: FakeOllama
) -> Iterator[Stack]:
    config = provider_config("ollama", fake_ollama, None)
    config["sse"] = {"keepalive_s": 0.3}
    stack = launch(tmp_path_factory.mktemp("stack"), config)
    yield stack
    stack.stop()


@pytest.fixture
def client(ollama_stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=ollama_stack.url, timeout=20) as c:
        yield c


class ProviderStack:
    """A running stack on one provider, with that provider's fake."""

    def __init__(self, name: str, stack: Stack, fake: FakeOllama | FakeAnthropic) -> None:
        self.name = name
        self.stack = stack
        self.fake = fake

    @property
    def model(self) -> str:
        return "llama3.2" if self.name == "ollama" else "claude-test"


@pytest.fixture(scope="module", params=["ollama", "anthropic"])
def provider_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProviderStack]:
    """The same stack on each provider; hangs are detected after 1 s."""
    with FakeOllama() as ollama, FakeAnthropic(api_key=ANTHROPIC_KEY) as anthropic:
        config = provider_config(request.param, ollama, anthropic)
        config["providers"] = {"first_byte_timeout_s": 1.0, "idle_timeout_s": 1.0}
        stack = launch(tmp_path_factory.mktemp(request.param), config)
        fake: FakeOllama | FakeAnthropic = ollama if request.param == "ollama" else anthropic
        try:
            yield ProviderStack(request.param, stack, fake)
        finally:
            stack.stop()
