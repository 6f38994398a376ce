"""build_request: the model request of a turn, from history, message and profile (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from service.content import Message, TextBlock
from service.profiles import Profile
from service.prompt import PromptRules, build_request, without_unanswered

RULES = PromptRules(system_prompt="Be brief.", max_tokens=321, history_budget_tokens=100)


def text(role: str, body: str) -> Message:
    return Message(role, [TextBlock(body)])  # type: ignore[arg-type]


def test_system_prompt_layers_profile_additions_and_name() -> None:
    request = build_request(
        RULES,
        history=[],
        message=text("user", "hi"),
        profile=Profile("alice", "Alice", "Answer in French."),
        model="m",
        user_id="alice",
    )
    assert request.system == "Be brief.\n\nAnswer in French.\n\nThe user's name is Alice."
    assert (request.max_tokens, request.model, request.user_id) == (321, "m", "alice")


def test_a_name_equal_to_the_user_id_is_not_repeated() -> None:
    request = build_request(
        RULES,
        history=[],
        message=text("user", "hi"),
        profile=Profile("bob", "bob", ""),
        model="m",
        user_id="bob",
    )
    assert request.system == "Be brief."


def test_history_is_merged_and_fitted_to_the_budget() -> None:
    old = [text("user", "x" * 400), text("assistant", "y" * 400)]  # ~100 tokens each
    failed = text("user", "the failed turn")  # no reply was stored
    request = build_request(
        RULES,
        history=[*old, failed],
        message=text("user", "again"),
        profile=Profile("u", "u", ""),
        model="m",
        user_id="u",
    )
    # The old exchange is over budget; the failed turn and the new one merge into
    # one message, as separate paragraphs.
    assert len(request.messages) == 1
    assert request.messages[0].role == "user"
    assert [b.text for b in request.messages[0].content] == ["the failed turn\n\nagain"]  # type: ignore[union-attr]


def test_stored_estimates_give_the_same_request_as_estimating_again() -> None:
    from service.history import estimate_tokens

    history = [
        text("user" if i % 2 == 0 else "assistant", f"turn {i} " * (i % 7)) for i in range(60)
    ]
    history.append(text("user", "a failed turn"))  # merges with the new message
    kwargs = {
        "message": text("user", "now"),
        "profile": Profile("u", "u", ""),
        "model": "m",
        "user_id": "u",
    }
    plain = build_request(RULES, history=history, **kwargs)  # type: ignore[arg-type]
    known = build_request(
        RULES,
        history=history,
        estimates=[estimate_tokens(m) for m in history],
        **kwargs,  # type: ignore[arg-type]
    )
    assert known == plain and 1 < len(plain.messages) < len(history)


@dataclass(frozen=True)
class Row:
    """The parts of a stored message without_unanswered reads."""

    role: str
    status: str
    request_id: str


def test_a_question_no_answer_followed_is_not_sent_again() -> None:
    stored = [
        Row("user", "complete", "r1"),
        Row("assistant", "complete", "r1"),
        Row("user", "failed", "r2"),  # the provider was busy: no answer
        Row("user", "cancelled", "r3"),  # cancelled before a word
        Row("user", "failed", "r4"),  # failed mid-answer: the part said stays
        Row("assistant", "failed", "r4"),
    ]
    kept = without_unanswered(stored)
    assert [(m.role, m.request_id) for m in kept] == [
        ("user", "r1"),
        ("assistant", "r1"),
        ("user", "r4"),
        ("assistant", "r4"),
    ]
