"""Fixtures for end-to-end tests: fakes in this process, the stack in subprocesses."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.queue_helpers import ReplyBook
from tests.e2e.stack import ANTHROPIC_KEY, Stack, launch, provider_config
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.ollama import FakeOllama
from tests.gateway_http import gateway_client


@pytest.fixture(scope="module")
def fake_ollama() -> Iterator[FakeOllama]:
    with FakeOllama() as fake:
        yield fake


@pytest.fixture(scope="module")
def fake_ollama_b() -> Iterator[FakeOllama]:
    """A second Ollama host, for the stacks with a pool of two."""
    with FakeOllama() as fake:
        yield fake


@pytest.fixture(scope="module")
def fake_anthropic() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key=ANTHROPIC_KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def ollama_stack(
    tmp_path_factory: pytest.TempPathFactory, fake_ollama: FakeOllama
) -> Iterator[Stack]:
    config = provider_config("ollama", fake_ollama, None)
    config["sse"] = {"keepalive_s": 0.3}
    stack = launch(tmp_path_factory.mktemp("stack"), config)
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def stack(ollama_stack: Stack) -> Stack:
    """The stack a module's tests talk to; modules with their own configuration override it."""
    return ollama_stack


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    with gateway_client(stack.url, timeout=20) as c:
        yield c


@pytest.fixture(scope="module")
def book(fake_ollama: FakeOllama, fake_ollama_b: FakeOllama) -> ReplyBook:
    """Replies chosen by message text, and the order the fakes received requests in."""
    return ReplyBook(fake_ollama, fake_ollama_b)


@pytest.fixture(scope="module", params=["one host", "two hosts"])
def pool_hosts(
    request: pytest.FixtureRequest, fake_ollama: FakeOllama, fake_ollama_b: FakeOllama
) -> tuple[FakeOllama, ...]:
    """The Ollama hosts of a queue stack: the queue tests run on one host and on a pool of two."""
    return (fake_ollama,) if request.param == "one host" else (fake_ollama, fake_ollama_b)


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
