"""Prompt-cache usage reported everywhere usage is: gRPC, REST, /usage, metrics, a turn's sum."""

from __future__ import annotations

from agent.v1 import agent_pb2 as pb

from gateway import convert as gateway_convert
from service.agent import Transcript
from service.commands import Commands
from service.content import TextBlock, Usage
from service.limits import Limits, LimitsSection
from service.observability.metrics import ServiceMetrics
from service.profiles import ProfileDirectory
from service.providers.base import AssistantTurn
from service.rpc import convert as rpc_convert
from service.store import ConversationStore, NewMessage

CACHED = Usage(
    input_tokens=12, output_tokens=5, cache_creation_input_tokens=300, cache_read_input_tokens=4000
)


def test_a_turn_sums_cache_figures_over_its_rounds_and_stores_them_per_round() -> None:
    transcript = Transcript("anthropic", "m", "r1")
    transcript.live = AssistantTurn(text_parts=["a"], usage=CACHED)
    transcript.close_round()
    transcript.live = AssistantTurn(text_parts=["b"], usage=Usage(1, 2, 0, 4300))
    assert transcript.usage == Usage(13, 7, 300, 8300)
    stored = transcript.to_store("complete")
    assert [(m.cache_creation_input_tokens, m.cache_read_input_tokens) for m in stored] == [
        (300, 4000),
        (0, 4300),
    ]


def test_grpc_and_rest_carry_the_cache_fields() -> None:
    message = rpc_convert.usage(CACHED)
    assert (message.cache_creation_input_tokens, message.cache_read_input_tokens) == (300, 4000)
    wire = pb.Usage.FromString(message.SerializeToString())
    assert gateway_convert.usage(wire) == {
        "input_tokens": 12,
        "output_tokens": 5,
        "cache_creation_input_tokens": 300,
        "cache_read_input_tokens": 4000,
    }


def test_metrics_count_tokens_by_kind() -> None:
    metrics = ServiceMetrics()
    metrics.spent("anthropic", "m", CACHED)
    metrics.spent("anthropic", "m", CACHED)

    def value(kind: str) -> float | None:
        return metrics.registry.get_sample_value(
            "agent_tokens_total", {"provider": "anthropic", "model": "m", "direction": kind}
        )

    assert [value(k) for k in ("input", "output", "cache_read", "cache_creation")] == [
        24.0,
        10.0,
        8000.0,
        600.0,
    ]


async def test_usage_command_reports_cache_reads_and_writes(store: ConversationStore) -> None:
    conversation = await store.create_conversation("alice")
    answer = NewMessage(
        role="assistant",
        content=[TextBlock("a")],
        input_tokens=12,
        output_tokens=5,
        cache_creation_input_tokens=300,
        cache_read_input_tokens=4000,
    )
    await store.append_messages(
        "alice", conversation.id, [NewMessage("user", [TextBlock("q")]), answer]
    )
    commands = Commands(store, ProfileDirectory(None), Limits(LimitsSection(), store))
    reply = await commands.run("alice", "/usage", conversation)
    assert "12 input, 5 output, 4000 read from the prompt cache, 300 written to it" in reply.text
    # The spend line counts what is billed: 17 + 300 x 1.25 + 4000 x 0.1.
    assert "Spent today (UTC): 792 tokens" in reply.text
