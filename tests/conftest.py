"""Fixtures shared by the in-process tests: a fake Ollama server and a SQLite store.

End-to-end and provider tests have their own (module-scoped) fixtures in
their folders' conftest files.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from service.store import ConversationStore, open_store
from tests.fakes.ollama import FakeOllama
from tests.openapi_check import found_so_far


@pytest.fixture
async def fake() -> AsyncIterator[FakeOllama]:
    """A fresh fake Ollama on loopback, for one test."""
    async with FakeOllama() as server:
        yield server


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ConversationStore]:
    """An empty SQLite store in the test's own folder."""
    async with open_store(f"sqlite:///{tmp_path / 'chat.db'}") as s:
        yield s


@pytest.fixture(autouse=True)
def _answers_match_the_document() -> Iterator[None]:
    """Fails a test whose gateway answers disagreed with /openapi.json where no one looked.

    The check raises where a response is closed; a stream read in a thread
    (tests/e2e/queue_helpers.LiveStream) keeps that to itself unless joined.
    """
    before = len(found_so_far())
    yield
    late = found_so_far()[before:]
    assert not late, "responses disagree with /openapi.json:\n" + "\n".join(late)
