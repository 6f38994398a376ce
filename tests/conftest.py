"""Fixtures shared by the in-process tests: a fake Ollama server and a SQLite store.

End-to-end and provider tests have their own (module-scoped) fixtures in
their folders' conftest files.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service.store import ConversationStore, open_store
from tests.fakes.ollama import FakeOllama


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
