"""The cache-warm conversation scenario of `make bench` (issue 22): 200 turns, 4,000-token budget.

Runs the real service in process (store, scheduler, chat path, provider
bridges over HTTP) against the fakes, whose prompt caches follow
PROTOCOLS.md, once per provider and mode:

- Anthropic, prompt caching on, against the same conversation with it off:
  the share of input tokens read from the cache, and billed input cost
  (uncached 1x, cache writes 1.25x, cache reads 0.1x) against the baseline's.
- Ollama, the stepped history window against the sliding one (watermark 1.0):
  how often a turn's prompt begins with the whole previous prompt, and the
  sum of prompt_eval_count against the baseline's.

It prints and returns figures; it asserts nothing.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.config import Settings
from service.content import Usage
from service.events import TurnInput
from service.server import running_service
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.ollama import FakeOllama
from tests.fakes.server import LoopbackServer

TURNS = 200
BUDGET = 4000
# ~190 characters a question; the fakes echo it: ~100 estimated tokens a turn,
# so the history outgrows the budget around turn 40.
_WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
]


def question(number: int) -> str:
    words = [_WORDS[(number * 7 + i * 3) % len(_WORDS)] for i in range(28)]
    return f"Question {number}: " + " ".join(words) + "?"


@dataclass
class Run:
    """One conversation's figures."""

    usage: Usage
    prompts: list[list[Any]]  # the messages of every model call, in order
    over_budget_from: int  # the first turn whose history no longer fit

    def prefix_kept(self) -> float:
        """Share of calls whose prompt begins with the whole previous prompt."""
        kept = sum(
            1
            for before, after in zip(self.prompts, self.prompts[1:], strict=False)
            if after[: len(before)] == before
        )
        return kept / max(len(self.prompts) - 1, 1)


def _settings(folder: Path, fake: LoopbackServer, provider: str, **api: Any) -> Settings:
    caching = api.pop("prompt_caching", True)
    sections: dict[str, Any] = {
        "grpc": {"address": "127.0.0.1:0", "shutdown_grace_s": 0.5},
        "metrics": {"address": ""},
        "store": {"url": f"sqlite:///{folder / 'bench-cache.db'}"},
        "auth": {"shared_token": "bench-cache"},
        "api": {"provider": provider, "history_budget_tokens": BUDGET, **api},
        # Nothing listens on port 9: an Anthropic run has no Ollama host to reach.
        "ollama": {"url": fake.url if provider == "ollama" else "http://127.0.0.1:9"},
    }
    if provider == "anthropic":
        sections["anthropic"] = {
            "api_key": "sk-bench",
            "base_url": fake.url,
            "model": "claude-bench",
            "prompt_caching": caching,
        }
    return Settings(**sections)


async def converse(provider: str, **api: Any) -> Run:
    """One 200-turn conversation on a fresh fake and a fresh service."""
    fake: FakeAnthropic | FakeOllama = FakeAnthropic() if provider == "anthropic" else FakeOllama()
    with tempfile.TemporaryDirectory() as folder, fake:
        settings = _settings(Path(folder), fake, provider, **api)
        total, conversation, over = Usage(), "", 0
        async with running_service(settings) as running:
            for number in range(TURNS):
                turn = TurnInput(
                    user_id="bench",
                    message=question(number),
                    conversation_id=conversation,
                    new_conversation=not conversation,
                    request_id=f"cache-{number}",  # the RPC edge mints one for every turn
                )
                result = await running.chat.run_turn(turn)
                conversation = result.conversation_id
                total = total + result.usage
                messages = fake.chats[-1].json["messages"]
                if not over and len(messages) < 2 * number + 1:  # not the whole history
                    over = number
        prompts = [call.json["messages"] for call in fake.chats]
    return Run(total, prompts, over)


def billed_input(usage: Usage) -> float:
    return (
        usage.input_tokens
        + 1.25 * usage.cache_creation_input_tokens
        + 0.1 * usage.cache_read_input_tokens
    )


async def measure() -> dict[str, Any]:
    """Both providers, each against its baseline."""
    cached = await converse("anthropic", prompt_caching=True)
    uncached = await converse("anthropic", prompt_caching=False)
    stepped = await converse("ollama")
    sliding = await converse("ollama", history_watermark=1.0)
    u = cached.usage
    all_input = u.input_tokens + u.cache_creation_input_tokens + u.cache_read_input_tokens
    return {
        "turns": TURNS,
        "budget_tokens": BUDGET,
        "anthropic": {
            "over_budget_from_turn": cached.over_budget_from,
            "input_tokens": u.input_tokens,
            "cache_creation_input_tokens": u.cache_creation_input_tokens,
            "cache_read_input_tokens": u.cache_read_input_tokens,
            "read_share": u.cache_read_input_tokens / max(all_input, 1),
            "billed_input": billed_input(u),
            "billed_input_caching_off": billed_input(uncached.usage),
            "billed_ratio": billed_input(u) / max(billed_input(uncached.usage), 1.0),
        },
        "ollama": {
            "over_budget_from_turn": stepped.over_budget_from,
            "prefix_kept_share": stepped.prefix_kept(),
            "prefix_kept_share_sliding": sliding.prefix_kept(),
            "prompt_eval_count": stepped.usage.input_tokens,
            "prompt_eval_count_sliding": sliding.usage.input_tokens,
            "prompt_eval_ratio": stepped.usage.input_tokens / max(sliding.usage.input_tokens, 1),
        },
    }


def cache_verdicts(results: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """(target, measured, against the baseline, met) for issue 22's four figures."""
    a, o = results["anthropic"], results["ollama"]
    read, written = a["cache_read_input_tokens"], a["cache_creation_input_tokens"]
    return [
        (
            "anthropic: >= 85% of input tokens read from the cache",
            f"{a['read_share']:.1%} ({read} of {a['input_tokens'] + written + read})",
            f"{written} written to it, {a['input_tokens']} uncached",
            a["read_share"] >= 0.85,
        ),
        (
            "anthropic: billed input <= 25% of the same conversation with caching off",
            f"{a['billed_ratio']:.1%}",
            f"{a['billed_input']:.0f} against {a['billed_input_caching_off']:.0f} "
            "(reads 0.1x, writes 1.25x)",
            a["billed_ratio"] <= 0.25,
        ),
        (
            "ollama: >= 90% of turns send a prompt beginning with the whole previous one",
            f"{o['prefix_kept_share']:.1%}",
            f"{o['prefix_kept_share_sliding']:.1%} with the sliding window",
            o["prefix_kept_share"] >= 0.90,
        ),
        (
            "ollama: prompt_eval_count <= 25% of the sliding window's",
            f"{o['prompt_eval_ratio']:.1%}",
            f"{o['prompt_eval_count']} against {o['prompt_eval_count_sliding']}",
            o["prompt_eval_ratio"] <= 0.25,
        ),
    ]


def report(results: dict[str, Any]) -> None:
    a, o = results["anthropic"], results["ollama"]
    print(
        f"\ncache-warm conversation: {results['turns']} turns,"
        f" {results['budget_tokens']}-token history budget; over budget from turn"
        f" {a['over_budget_from_turn']} (anthropic), {o['over_budget_from_turn']} (ollama)"
    )
    for target, measured, ratio, met in cache_verdicts(results):
        print(f"  [{'met' if met else 'NOT met'}] {target}\n      {measured}; {ratio}")
