from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

import pytest

from service.content import Block, Message, TextBlock, ToolResultBlock, ToolUseBlock
from service.history import estimate_tokens, fit_history, merge_consecutive


def user(text: str) -> Message:
    return Message(role="user", content=(TextBlock(text),))


def assistant(text: str) -> Message:
    return Message(role="assistant", content=(TextBlock(text),))


def tool_use(call_id: str, text: str = "") -> Message:
    blocks: list[Block] = [TextBlock(text)] if text else []
    blocks.append(ToolUseBlock(id=call_id, name="calculator", input={"expression": "1+1"}))
    return Message(role="assistant", content=tuple(blocks))


def tool_result(call_id: str, content: str = "2") -> Message:
    return Message(role="user", content=(ToolResultBlock(tool_use_id=call_id, content=content),))


def cost(messages: Sequence[Message]) -> int:
    return sum(estimate_tokens(m) for m in messages)


def is_plain_user(message: Message) -> bool:
    return message.role == "user" and not any(
        isinstance(b, ToolResultBlock) for b in message.content
    )


# --- estimate_tokens ----------------------------------------------------------


def test_estimate_grows_with_text() -> None:
    short, long = estimate_tokens(user("hi")), estimate_tokens(user("hi " * 400))
    assert 0 < short < long
    assert 250 <= long <= 350  # ~1200 characters at ~4 per token, plus overhead


def test_estimate_counts_tool_input_json() -> None:
    small = Message("assistant", (ToolUseBlock(id="a", name="t", input={"q": "x"}),))
    big = Message("assistant", (ToolUseBlock(id="a", name="t", input={"q": "x" * 4000}),))
    assert estimate_tokens(big) - estimate_tokens(small) >= 900


def test_estimate_counts_tool_results_and_blocks() -> None:
    assert estimate_tokens(tool_result("a", "y" * 400)) > estimate_tokens(tool_result("a", "y"))
    one = Message("user", (TextBlock("abcd"),))
    two = Message("user", (TextBlock("ab"), TextBlock("cd")))
    assert estimate_tokens(two) > estimate_tokens(one)  # per-block overhead


def test_estimate_survives_unserializable_input() -> None:
    odd = Message("assistant", (ToolUseBlock(id="a", name="t", input={"when": object()}),))
    assert estimate_tokens(odd) > 0


# --- fit_history: hand-made cases ---------------------------------------------------


def test_everything_fits() -> None:
    history = [user("a"), assistant("b"), user("c")]
    assert fit_history(history, 10_000) == history


def test_empty_history() -> None:
    assert fit_history([], 100) == []


def test_oldest_turns_are_dropped_first() -> None:
    history = [user("old " * 50), assistant("old " * 50), user("new"), assistant("ok"), user("q")]
    budget = cost(history[2:])
    assert fit_history(history, budget) == history[2:]
    assert fit_history(history, budget - 1) == history[4:]


def test_last_message_kept_even_over_budget() -> None:
    history = [user("a"), assistant("b"), user("huge " * 1000)]
    assert fit_history(history, 5) == [history[-1]]
    assert fit_history(history, 0) == [history[-1]]


def test_tool_pair_dropped_together() -> None:
    history = [
        user("first"),
        tool_use("t1"),
        tool_result("t1", "result " * 100),
        assistant("the answer"),
        user("second"),
    ]
    # Enough for everything after the first user message, but the first user
    # message is the only valid start before "second": all or just the last.
    budget = cost(history[1:])
    assert fit_history(history, budget) == [history[-1]]
    assert fit_history(history, cost(history)) == history


def test_current_agent_turn_is_never_cut() -> None:
    # The orchestrator calls fit_history mid-turn: the last message is a tool result.
    history = [
        user("earlier"),
        assistant("sure"),
        user("compute " * 100),
        tool_use("t1"),
        tool_result("t1"),
        tool_use("t2"),
        tool_result("t2"),
    ]
    assert fit_history(history, 1) == history[2:]


def test_start_skips_tool_result_messages() -> None:
    history = [
        user("q1"),
        tool_use("t1"),
        tool_result("t1"),
        assistant("a1"),
        user("q2"),
        assistant("a2"),
        user("q3"),
    ]
    for budget in range(0, cost(history) + 5):
        fitted = fit_history(history, budget)
        assert is_plain_user(fitted[0])
        assert fitted[-1] == history[-1]


def test_merged_result_with_text_is_not_a_valid_start() -> None:
    # A failed turn left a tool result and the next question in one user message.
    mixed = Message("user", (ToolResultBlock(tool_use_id="t1", content="2"), TextBlock("q2")))
    history = [user("q1"), tool_use("t1"), mixed]
    assert fit_history(history, 1) == history


def test_no_plain_user_message_returns_input_unchanged() -> None:
    history = [tool_result("t0"), assistant("x")]
    assert fit_history(history, 1) == history


# --- fit_history: generated conversations -----------------------------------------


def random_conversation(rng: random.Random) -> list[Message]:
    messages: list[Message] = []
    for turn in range(rng.randint(1, 8)):
        messages.append(user("u" * rng.randint(0, 300)))
        for call in range(rng.randint(0, 3)):
            call_id = f"t{turn}_{call}"
            messages.append(tool_use(call_id, "x" * rng.randint(0, 80)))
            messages.append(tool_result(call_id, "r" * rng.randint(0, 400)))
        if rng.random() < 0.8:  # else a failed turn: no assistant reply was stored
            messages.append(assistant("a" * rng.randint(1, 300)))
    if messages[-1].role == "assistant":
        messages.append(user("final question"))
    # As the orchestrator would: stored history is merged before fitting.
    return merge_consecutive(messages)


@pytest.mark.parametrize("seed", range(200))
def test_generated_conversations_keep_invariants(seed: int) -> None:
    rng = random.Random(seed)
    history = random_conversation(rng)
    budget = rng.randint(0, cost(history) + 50)
    fitted = fit_history(history, budget)

    # A suffix: order preserved, latest kept, nothing invented.
    assert fitted == history[len(history) - len(fitted) :]
    assert fitted[-1] is history[-1]
    # Starts with a plain user turn, so no tool result lost its tool call.
    assert is_plain_user(fitted[0])
    kept_uses = {b.id for m in fitted for b in m.content if isinstance(b, ToolUseBlock)}
    kept_results = {
        b.tool_use_id for m in fitted for b in m.content if isinstance(b, ToolResultBlock)
    }
    assert kept_results == kept_uses
    # Roles alternate as in the input.
    assert all(a.role != b.role for a, b in itertools.pairwise(fitted))

    starts = [i for i, m in enumerate(history) if is_plain_user(m)]
    current_turn = history[starts[-1] :]
    if len(fitted) > len(current_turn):
        assert cost(fitted) <= budget
    else:
        assert fitted == current_turn
    # Maximal: the next older valid start would not fit.
    start = len(history) - len(fitted)
    older = [i for i in starts if i < start]
    if older:
        assert cost(history[older[-1] :]) > budget


# --- merge_consecutive -------------------------------------------------------------


def test_merge_joins_same_role_neighbours_in_order() -> None:
    history = [user("q1"), tool_use("t1"), tool_result("t1"), user("q2"), assistant("a")]
    merged = merge_consecutive(history)
    assert [m.role for m in merged] == ["user", "assistant", "user", "assistant"]
    assert merged[2].content == (*history[2].content, *history[3].content)
    assert merged[:2] == history[:2]
    assert merged[3] == history[4]


def test_merge_handles_runs_and_empty_messages() -> None:
    history = [
        user("a"),
        user("b"),
        Message("assistant", ()),  # cancelled before any output
        user("c"),
        assistant("x"),
        assistant("y"),
    ]
    merged = merge_consecutive(history)
    # Texts meeting at a seam become one block, a blank line apart: never glued.
    assert merged == [
        Message("user", (TextBlock("a\n\nb\n\nc"),)),
        Message("assistant", (TextBlock("x\n\ny"),)),
    ]


def test_merge_keeps_tool_blocks_apart_from_the_texts() -> None:
    result = Message("user", (ToolResultBlock("t1", "42"),))
    merged = merge_consecutive([result, user("next")])
    assert merged == [Message("user", (ToolResultBlock("t1", "42"), TextBlock("next")))]


def test_merge_of_alternating_history_is_identity() -> None:
    history = [user("a"), assistant("b"), user("c")]
    assert merge_consecutive(history) == history
    assert merge_consecutive([]) == []
