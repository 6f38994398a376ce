"""stepped_window: a history cut back in steps, so the prompt's prefix stays put between cuts."""

from __future__ import annotations

import random

from service.content import Message, TextBlock, ToolResultBlock, ToolUseBlock
from service.history import estimate_tokens, fit_history, stepped_window
from service.profiles import Profile
from service.prompt import PromptRules, build_request

BUDGET = 4000
WATERMARK = 2800


def cost(messages: list[Message]) -> int:
    return sum(estimate_tokens(m) for m in messages)


def one_turn(rng: random.Random, number: int) -> list[Message]:
    """What a turn adds after its user message: sometimes a tool round, then the answer."""
    added: list[Message] = []
    if rng.random() < 0.3:
        call_id = f"call_{number}"
        added.append(
            Message("assistant", [ToolUseBlock(call_id, "clock", {"zone": "UTC", "n": number})])
        )
        added.append(
            Message("user", [ToolResultBlock(call_id, "12:00 " * rng.randint(1, 40), name="clock")])
        )
    added.append(Message("assistant", [TextBlock(f"answer {number} " * rng.randint(2, 60))]))
    return added


def tool_pairs_intact(prompt: list[Message]) -> bool:
    called = {b.id for m in prompt for b in m.content if isinstance(b, ToolUseBlock)}
    answered = [b.tool_use_id for m in prompt for b in m.content if isinstance(b, ToolResultBlock)]
    return all(answer in called for answer in answered)


def plain_user(message: Message) -> bool:
    return message.role == "user" and not any(
        isinstance(b, ToolResultBlock) for b in message.content
    )


def test_over_300_turns_past_the_budget_the_prefix_changes_only_at_cuts() -> None:
    rng = random.Random(22)
    history: list[Message] = []
    previous: list[Message] | None = None
    previous_start = 0
    cuts = over_budget_turns = 0
    for number in range(360):
        history.append(Message("user", [TextBlock(f"question {number} " * rng.randint(1, 30))]))
        prompt = stepped_window(history, BUDGET, WATERMARK)
        assert plain_user(prompt[0]) and tool_pairs_intact(prompt)
        assert prompt == history[len(history) - len(prompt) :]  # a suffix of the history
        assert cost(prompt) <= BUDGET
        if cost(history) > BUDGET:
            over_budget_turns += 1
        if previous is not None and prompt[: len(previous)] != previous:
            # A cut: it lands at or under the watermark.
            cuts += 1
            assert cost(prompt) <= WATERMARK
            # ...and it was needed: the old start would have gone over the budget.
            assert cost(history[previous_start:]) > BUDGET
        previous, previous_start = prompt, len(history) - len(prompt)
        history.extend(one_turn(rng, number))
    assert over_budget_turns >= 300
    # A cut frees ~30 % of the budget; turns here cost ~250 tokens: a cut every few turns.
    assert 0 < cuts < over_budget_turns // 3


def test_the_same_history_always_gives_the_same_window() -> None:
    rng = random.Random(7)
    history: list[Message] = []
    for number in range(120):
        history.append(Message("user", [TextBlock("q " * rng.randint(1, 80))]))
        history.extend(one_turn(rng, number))
    history.append(Message("user", [TextBlock("now")]))
    first = stepped_window(history, BUDGET, WATERMARK)
    assert stepped_window(list(history), BUDGET, WATERMARK) == first
    assert len(first) < len(history)


def test_a_watermark_at_the_budget_slides_like_fit_history() -> None:
    rng = random.Random(3)
    history: list[Message] = []
    for number in range(80):
        history.append(Message("user", [TextBlock("q " * rng.randint(1, 80))]))
        assert stepped_window(history, 1500, 1500) == fit_history(history, 1500)
        history.extend(one_turn(rng, number))


def test_the_current_turn_is_kept_when_it_alone_is_over_the_budget() -> None:
    history = [
        Message("user", [TextBlock("a" * 400)]),
        Message("assistant", [TextBlock("b" * 400)]),
        Message("user", [TextBlock("c" * 40_000)]),
    ]
    assert stepped_window(history, 1000, 700) == history[2:]


def test_history_without_a_plain_user_message_is_returned_unchanged() -> None:
    history = [Message("assistant", [TextBlock("x" * 10_000)])]
    assert stepped_window(history, 100, 70) == history


def test_build_request_cuts_to_the_configured_watermark() -> None:
    rules = PromptRules(
        system_prompt="s", max_tokens=10, history_budget_tokens=1000, history_watermark=0.5
    )
    turns = [
        Message("user" if i % 2 == 0 else "assistant", [TextBlock("w" * 400)]) for i in range(9)
    ]
    kwargs = {"profile": Profile("u", "u", ""), "model": "m", "user_id": "u"}
    # 9 messages of ~108 tokens, then a 10th: 1,080 tokens, over the 1,000 budget.
    request = build_request(rules, history=turns[:-1], message=turns[-1], **kwargs)  # type: ignore[arg-type]
    assert cost(list(request.messages)) == cost(turns)  # 972 tokens: fits
    grown = [*turns, Message("assistant", [TextBlock("w" * 400)])]
    request = build_request(rules, history=grown, message=turns[0], **kwargs)  # type: ignore[arg-type]
    assert cost(list(request.messages)) <= 500
    sliding = PromptRules(
        system_prompt="s", max_tokens=10, history_budget_tokens=1000, history_watermark=1.0
    )
    request = build_request(sliding, history=grown, message=turns[0], **kwargs)  # type: ignore[arg-type]
    assert 500 < cost(list(request.messages)) <= 1000
