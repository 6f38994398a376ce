"""History summaries, the pure parts: where a cut starts, where a summary goes, how it is asked."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from service.content import Message, TextBlock, ToolResultBlock, ToolUseBlock
from service.history import estimate_tokens, merge_consecutive
from service.profiles import Profile
from service.prompt import (
    SUMMARY_CLOSE,
    SUMMARY_OPEN,
    PromptRules,
    build_request,
    prompt_window,
    window_origin,
    with_summary,
)
from service.store.base import StoredMessage
from service.summary_prompt import next_chunk, storable, summary_request, transcript
from tests.test_history_window import one_turn, plain_user

RULES = PromptRules(system_prompt="s", max_tokens=10, history_budget_tokens=4000)
PROFILE = Profile("u", "u", "")


def user(text: str) -> Message:
    return Message("user", [TextBlock(text)])


def assistant(text: str) -> Message:
    return Message("assistant", [TextBlock(text)])


# --- where the window starts: what a cut drops ----------------------------------------


def test_the_origin_is_where_in_the_history_the_window_begins() -> None:
    rng = random.Random(5)
    history: list[Message] = []
    seen_cut = False
    for number in range(200):
        message = user(f"question {number} " * rng.randint(1, 30))
        window = prompt_window(RULES, history, message)
        origin = window_origin(history, window)
        # The window is the history from the origin on, plus the new message.
        assert window == merge_consecutive([*history[origin:], message])
        seen_cut = seen_cut or origin > 0
        history += [message, *one_turn(rng, number)]
    assert seen_cut


def test_the_origin_of_a_merged_first_message_is_the_first_one_merged() -> None:
    # A failed turn left a question without an answer: two user messages in a row.
    history = [user("a" * 4000), assistant("b" * 4000), user("failed"), user("c" * 40)]
    history.append(assistant("d" * 40))
    rules = PromptRules(
        system_prompt="s", max_tokens=10, history_budget_tokens=2000, history_watermark=0.5
    )
    window = prompt_window(rules, history, user("now"))
    assert window[0].content[0] == TextBlock("failed\n\n" + "c" * 40)
    assert window_origin(history, window) == 2


def test_the_origin_of_a_window_of_the_new_message_alone_is_past_the_history() -> None:
    history = [user("a" * 400), assistant("b" * 400)]
    rules = PromptRules(system_prompt="s", max_tokens=10, history_budget_tokens=100)
    message = user("c" * 4000)  # over the budget on its own: only it is kept
    window = prompt_window(rules, history, message)
    assert window == [message]
    assert window_origin(history, window) == 2


def test_a_new_message_that_merges_into_the_last_one_starts_nothing_of_its_own() -> None:
    history = [user("a"), assistant("b"), user("unanswered")]
    window = prompt_window(RULES, history, user("again"))
    assert window_origin(history, window) == 0
    assert window_origin([], prompt_window(RULES, [], user("first"))) == 0


# --- the summary at the head of the prompt ----------------------------------------------


def test_a_summary_opens_the_first_user_message() -> None:
    window = [user("question"), assistant("answer"), user("now")]
    placed = with_summary(window, "Alice likes tea.")
    assert placed[1:] == window[1:]
    assert placed[0].role == "user" and plain_user(placed[0])
    # One text block: Anthropic joins adjacent blocks with nothing, Ollama with a
    # paragraph break, so a block of its own would read differently on each.
    assert list(placed[0].content) == [
        TextBlock(f"{SUMMARY_OPEN}Alice likes tea.{SUMMARY_CLOSE}question")
    ]
    assert SUMMARY_CLOSE.endswith("\n\n")
    assert with_summary(window, "") == window
    # The same summary always reads the same: the prefix stays put between cuts.
    assert with_summary(window, "Alice likes tea.") == placed


def test_build_request_puts_the_summary_at_the_head_and_leaves_the_rest_alone() -> None:
    history = [user("q1"), assistant("a1")]
    kwargs = {"profile": PROFILE, "model": "m", "user_id": "u"}
    plain = build_request(RULES, history=history, message=user("q2"), **kwargs)  # type: ignore[arg-type]
    summed = build_request(RULES, history=history, message=user("q2"), summary="S", **kwargs)  # type: ignore[arg-type]
    assert summed.system == plain.system
    assert summed.messages[1:] == plain.messages[1:]
    [head] = summed.messages[0].content
    [question] = plain.messages[0].content
    assert isinstance(head, TextBlock) and isinstance(question, TextBlock)
    assert head.text == f"{SUMMARY_OPEN}S{SUMMARY_CLOSE}{question.text}"
    assert summed.cacheable and plain.cacheable


def test_with_a_summary_the_prompt_prefix_changes_only_at_cuts_and_new_summaries() -> None:
    """360 turns, most past the budget: a turn's prompt begins with the whole previous one
    unless the window was cut or the summary of the last cut arrived in between."""
    rng = random.Random(22)
    history: list[Message] = []
    summary, pending = "", ""
    previous: list[Message] | None = None
    previous_origin = 0
    changes = cuts = 0
    for number in range(360):
        message = user(f"question {number} " * rng.randint(1, 30))
        window = prompt_window(RULES, history, message)
        origin = window_origin(history, window)
        cut = origin != previous_origin
        # The summary a cut asked for is ready by the turn after it (a background job).
        arrived = bool(pending)
        if arrived:
            summary, pending = pending, ""
        if cut:
            cuts += 1
            pending = f"what the {origin} messages before the window said"
        prompt = with_summary(window, summary)
        assert plain_user(prompt[0])
        if previous is not None and prompt[: len(previous)] != previous:
            changes += 1
            assert cut or arrived
        previous, previous_origin = prompt, origin
        history += [message, *one_turn(rng, number)]
    assert cuts > 10
    assert changes <= 2 * cuts


# --- the summary request -----------------------------------------------------------------


def test_the_transcript_writes_out_text_tool_calls_and_results() -> None:
    messages = [
        user("What time is it?"),
        Message("assistant", [ToolUseBlock("c1", "clock", {"zone": "UTC"})]),
        Message("user", [ToolResultBlock("c1", "12:00", name="clock")]),
        Message("user", [ToolResultBlock("c2", "no such zone", is_error=True)]),
        Message("assistant", [TextBlock("It is noon."), TextBlock("  ")]),
    ]
    assert transcript(messages) == (
        "User: What time is it?\n\n"
        'Assistant called the tool clock with {"zone": "UTC"}\n\n'
        "The tool clock returned: 12:00\n\n"
        "The tool c2 failed: no such zone\n\n"
        "Assistant: It is noon."
    )


def test_a_summary_request_folds_the_messages_into_the_summary_so_far() -> None:
    request = summary_request(
        "Summarize.", "Alice likes tea.", [user("hi")], model="m", user_id="u", max_tokens=64
    )
    assert request.system == "Summarize."
    assert (request.model, request.user_id, request.max_tokens) == ("m", "u", 64)
    assert not request.cacheable  # nothing later starts with this prompt
    assert request.tools == ()
    [message] = request.messages
    assert message.role == "user"
    assert list(message.content) == [
        TextBlock("The summary so far:\nAlice likes tea.\n\nThe conversation since then:\nUser: hi")
    ]
    first = summary_request("S.", "", [user("hi")], model="m", user_id="u", max_tokens=64)
    assert list(first.messages[0].content) == [TextBlock("The conversation:\nUser: hi")]


def stored(message_id: int, tokens: int) -> StoredMessage:
    text = TextBlock("x")
    return StoredMessage(
        message_id, "c", "user", (text,), "complete", "", "", 0, 0, "", datetime.now(UTC), tokens
    )


def test_history_is_folded_in_chunks_of_a_prompts_size_oldest_first() -> None:
    rows = [stored(i, 40) for i in range(1, 11)]
    assert [r.id for r in next_chunk(rows, 100)] == [1, 2]
    assert [r.id for r in next_chunk(rows, 1000)] == list(range(1, 11))
    # One message over the budget is still summarized, alone.
    assert [r.id for r in next_chunk([stored(1, 500), stored(2, 5)], 100)] == [1]
    assert next_chunk([], 100) == []


def test_model_output_is_made_storable() -> None:
    assert storable("  a\x00b \ud800 ") == "ab ?"
    assert estimate_tokens(user(storable("x" * 40))) == estimate_tokens(user("x" * 40))
