"""The prompt caches of the fakes: Anthropic's breakpoint cache and Ollama's per-slot KV cache.

Anthropic (PROTOCOLS.md, "Prompt caching"): the prompt is a sequence of
blocks in the order tools, system, messages. A block carrying
``cache_control`` ends a cacheable prefix; the prefix is kept under the hash
of everything up to that block for five minutes, refreshed by each hit, when
it is at least the minimum cacheable length. A request reads the longest
cached prefix found at a breakpoint or up to 20 blocks before one. It reports
``cache_read_input_tokens`` (that prefix), ``cache_creation_input_tokens``
(from there to its last breakpoint, when that is written) and
``input_tokens`` (the rest).

Ollama: each slot keeps the tokens of its last prompt; a new prompt on that
slot evaluates only what comes after the longest common prefix
(``prompt_eval_count``, at least one token).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

LOOKBACK_BLOCKS = 20
CACHE_TTL_S = 300.0
MIN_CACHEABLE_TOKENS = 1024
_CHARS_PER_TOKEN = 4  # the service estimates the same way, so budgets line up


@dataclass(frozen=True)
class CacheUsage:
    """One request's input split as the API reports it."""

    input_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int


def _block_tokens(block: Any) -> int:
    text = block if isinstance(block, str) else _visible(block)
    return max(1, -(-len(text) // _CHARS_PER_TOKEN))


def _visible(block: dict[str, Any]) -> str:
    """What a block costs: its text, tool result, tool input or tool definition."""
    kind = block.get("type")
    if kind == "text":
        return str(block.get("text", ""))
    if kind == "tool_result":
        content = block.get("content", "")
        return content if isinstance(content, str) else json.dumps(content)
    if kind == "tool_use":
        return str(block.get("name", "")) + json.dumps(block.get("input", {}))
    return json.dumps({k: v for k, v in block.items() if k != "cache_control"})


def _blocks(body: dict[str, Any]) -> list[tuple[str, Any, bool]]:
    """(identity, block, is_breakpoint) of every block, in cache order."""
    out: list[tuple[str, Any, bool]] = []

    def add(where: str, block: Any) -> None:
        marked = isinstance(block, dict) and "cache_control" in block
        bare = (
            {k: v for k, v in block.items() if k != "cache_control"}
            if isinstance(block, dict)
            else block
        )
        out.append((where + json.dumps(bare, sort_keys=True), bare, marked))

    for tool in body.get("tools") or []:
        add("tool:", tool)
    system = body.get("system")
    for block in [system] if isinstance(system, str) else system or []:
        add("system:", block)
    for number, message in enumerate(body.get("messages") or []):
        content = message.get("content")
        for block in [content] if isinstance(content, str) else content or []:
            add(f"message {number} {message.get('role')}:", block)
    return out


class AnthropicPromptCache:
    """The cache of one fake Anthropic API; ``clock`` (seconds) is injectable for tests."""

    def __init__(
        self,
        *,
        min_tokens: int = MIN_CACHEABLE_TOKENS,
        ttl_s: float = CACHE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.min_tokens = min_tokens
        self.ttl_s = ttl_s
        self.clock = clock
        self._entries: dict[str, float] = {}  # prefix hash -> expiry
        self._lock = threading.Lock()

    def account(self, body: dict[str, Any]) -> CacheUsage:
        """Look up and write ``body``'s prefixes; how its input tokens split."""
        blocks = _blocks(body)
        digest = hashlib.sha256(str(body.get("model", "")).encode())
        hashes: list[str] = []
        totals: list[int] = []
        total = 0
        for identity, block, _ in blocks:
            digest.update(identity.encode())
            hashes.append(digest.copy().hexdigest())
            total += _block_tokens(block)
            totals.append(total)
        breakpoints = [i for i, (_, _, marked) in enumerate(blocks) if marked]
        now = self.clock()
        with self._lock:
            self._entries = {h: t for h, t in self._entries.items() if t > now}
            read = 0
            for point in breakpoints:
                # The breakpoint's own prefix, then up to 20 shorter ones.
                for index in range(point, max(point - LOOKBACK_BLOCKS - 1, -1), -1):
                    if hashes[index] in self._entries:
                        self._entries[hashes[index]] = now + self.ttl_s  # a hit refreshes it
                        read = max(read, totals[index])
                        break
            written = 0
            for point in breakpoints:
                if totals[point] >= self.min_tokens:
                    self._entries[hashes[point]] = now + self.ttl_s
                    written = max(written, totals[point])
        created = max(written - read, 0)
        return CacheUsage(total - read - created, created, read)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


def prompt_tokens(body: dict[str, Any]) -> list[str]:
    """An Ollama prompt as tokens: words, with a marker where each message starts."""
    tokens: list[str] = []
    for message in body.get("messages") or []:
        tokens.append(f"<{message.get('role')}>")
        tokens.extend(str(message.get("content", "")).split())
        for call in message.get("tool_calls") or []:
            tokens.extend(json.dumps(call, sort_keys=True).split())
    return tokens


class OllamaSlots:
    """The KV caches of a fake Ollama's slots (``OLLAMA_NUM_PARALLEL``)."""

    def __init__(self, slots: int = 1) -> None:
        self._previous: list[Sequence[str]] = [() for _ in range(slots)]
        self._busy = [False] * slots
        self._lock = threading.Lock()

    def take(self, tokens: Sequence[str]) -> tuple[int, int]:
        """(slot, tokens to evaluate): the free slot whose last prompt shares the most."""
        with self._lock:
            free = [i for i, busy in enumerate(self._busy) if not busy] or list(
                range(len(self._busy))
            )
            shared = {i: _common(self._previous[i], tokens) for i in free}
            slot = max(free, key=lambda i: shared[i])
            self._busy[slot] = True
            self._previous[slot] = tuple(tokens)
            return slot, max(1, len(tokens) - shared[slot])

    def release(self, slot: int) -> None:
        with self._lock:
            self._busy[slot] = False


def _common(first: Sequence[str], second: Sequence[str]) -> int:
    count = 0
    for a, b in zip(first, second, strict=False):
        if a != b:
            break
        count += 1
    return count
