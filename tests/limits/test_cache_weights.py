"""Token budgets count prompt-cache tokens with their documented, configurable weights."""

from __future__ import annotations

import pytest

from service.content import TextBlock
from service.errors import LimitReached
from service.limits import Limits, LimitsSection
from service.limits.config import TokenWeights
from service.store import ConversationStore, NewMessage

QUESTION = NewMessage(role="user", content=[TextBlock("q")])


async def spend_cached_turn(store: ConversationStore, user: str) -> None:
    """One turn of a long cached conversation: 20,000 tokens read from the cache."""
    conversation = await store.create_conversation(user)
    answer = NewMessage(
        role="assistant",
        content=[TextBlock("a")],
        input_tokens=50,
        output_tokens=30,
        cache_creation_input_tokens=400,
        cache_read_input_tokens=20_000,
    )
    await store.append_messages(user, conversation.id, [QUESTION, answer])


async def test_cached_tokens_count_at_their_default_weights(store: ConversationStore) -> None:
    limits = Limits(LimitsSection(tokens_per_day=3000), store)
    await spend_cached_turn(store, "alice")
    report = await limits.report("alice")
    # 50 + 30 at 1, 400 written at 1.25, 20,000 read at 0.1: 80 + 500 + 2,000.
    assert report.spent_today == report.spent_this_month == 2580
    assert report.left_today == 420
    await limits.admit("alice")  # 2,580 of 3,000: still admitted


async def test_weights_are_configurable_and_a_budget_refuses_on_them(
    store: ConversationStore,
) -> None:
    section = LimitsSection(
        tokens_per_day=3000, weights=TokenWeights(cache_read=1.0, cache_creation=1.0)
    )
    limits = Limits(section, store)
    await spend_cached_turn(store, "alice")
    assert (await limits.report("alice")).spent_today == 20_480  # counted as if uncached
    with pytest.raises(LimitReached) as refused:
        await limits.admit("alice")
    assert "20480 of tokens_per_day=3000" in refused.value.message


def test_weights_refuse_negative_or_unknown_keys() -> None:
    with pytest.raises(ValueError, match="cache_read"):
        LimitsSection.model_validate({"weights": {"cache_read": -1}})
    with pytest.raises(ValueError, match="cache_hits"):
        LimitsSection.model_validate({"weights": {"cache_hits": 0.5}})
