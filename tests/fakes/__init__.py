"""Loopback fakes of the LLM providers (real HTTP servers on 127.0.0.1) and their scripts.

    from tests.fakes import FakeOllama, FakeAnthropic, Reply, ScriptedToolCall

Names load lazily, so ``python -m tests.fakes.ollama`` runs its module only once.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "FakeAnthropic": "tests.fakes.anthropic",
    "FakeOllama": "tests.fakes.ollama",
    "Reply": "tests.fakes.script",
    "ScriptedToolCall": "tests.fakes.script",
    "RecordedRequest": "tests.fakes.server",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
