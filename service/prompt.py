"""Building one model request from what a turn knows: a pure function, no I/O.

The chat service reads the stored history and the user's profile; this module
turns them, with the new message, into the ``CompletionRequest`` a provider
gets. Keeping it pure keeps the rules (system prompt layering, merging, the
history budget) testable without a store or a provider.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from service.content import Message, TextBlock
from service.history import estimate_tokens, merge_consecutive, stepped_window
from service.profiles import Profile
from service.providers.base import CompletionRequest


@dataclass(frozen=True, slots=True)
class PromptRules:
    """The configured parts of every request."""

    system_prompt: str
    max_tokens: int
    history_budget_tokens: int
    # The share of the budget a cut brings the history down to (see stepped_window);
    # 1.0 slides the window by one turn at a time.
    history_watermark: float = 0.7

    @property
    def history_watermark_tokens(self) -> int:
        return int(self.history_budget_tokens * self.history_watermark)


def system_prompt(base: str, profile: Profile) -> str:
    """The configured prompt, then the user's own additions, then their name."""
    system = base
    if profile.system_prompt:
        system = f"{system}\n\n{profile.system_prompt}"
    if profile.display_name and profile.display_name != profile.user_id:
        system = f"{system}\n\nThe user's name is {profile.display_name}."
    return system


def prompt_window(
    rules: PromptRules,
    history: Sequence[Message],
    message: Message,
    estimates: Sequence[int] | None = None,
) -> list[Message]:
    """The messages a turn sends: history and the new message, merged and cut in steps.

    ``history`` is the stored conversation, oldest first (it may hold two user
    turns in a row after a failed turn; they are merged here). The window is cut
    in steps replayed from the history's first message, so ``history`` is the
    whole conversation or begins where an earlier window of it began (see
    ``HistoryReader``); anywhere else it gives a window cut at other places.
    ``estimates`` are the stored estimates of ``history``, one each.
    """
    messages = merge_consecutive([*history, message])
    # Stored estimates of the messages merging left as they were (the same objects).
    known = {id(m): e for m, e in zip(history, estimates or (), strict=estimates is not None)}

    def estimate(m: Message) -> int:
        return known.get(id(m)) or estimate_tokens(m)

    return stepped_window(
        messages, rules.history_budget_tokens, rules.history_watermark_tokens, estimate
    )


def window_origin(history: Sequence[Message], window: Sequence[Message]) -> int:
    """Where in ``history`` the window of ``prompt_window(rules, history, m)`` begins.

    The index of the first history message the window holds (of a merged first
    message, the first one merged); ``len(history)`` when it holds the new message
    alone. Everything before the index was cut off.
    """
    starts: list[int] = []  # index of the first message of each merged one
    role = None
    for index, m in enumerate(history):
        if not m.content or (starts and m.role == role):
            continue  # dropped, or merged into the message before
        starts.append(index)
        role = m.role
    # The new message is a user message: it merges into a last user message, or follows.
    if not starts or role != "user":
        starts.append(len(history))
    return starts[len(starts) - len(window)]


# Around a conversation's summary at the head of its prompt. The wording never changes,
# so the prompt's prefix changes only when the summary or the window's start does.
SUMMARY_OPEN = "<earlier_conversation_summary>\n"
SUMMARY_CLOSE = "\n</earlier_conversation_summary>\n\n"


def with_summary(window: Sequence[Message], summary: str) -> list[Message]:
    """``window`` with ``summary`` (of what was cut off before it) at its head.

    The summary opens the first message, which is a plain user message (the window
    always starts with one): a message of its own would make two user messages in
    a row. It joins that message's first text block, ending with a paragraph break,
    so every provider reads the same text (they join separate blocks differently).
    No summary: the window as is.
    """
    if not summary or not window or window[0].role != "user":
        return list(window)
    first = window[0]
    head = f"{SUMMARY_OPEN}{summary}{SUMMARY_CLOSE}"
    blocks = list(first.content)
    if blocks and isinstance(blocks[0], TextBlock):
        blocks[0] = TextBlock(head + blocks[0].text)
    else:
        blocks.insert(0, TextBlock(head))
    return [Message("user", blocks), *window[1:]]


def request_for(
    rules: PromptRules,
    window: Sequence[Message],
    *,
    profile: Profile,
    model: str,
    user_id: str,
    max_tokens: int | None = None,
    summary: str = "",
) -> CompletionRequest:
    """The model request of a turn whose messages are ``window`` (see ``prompt_window``)."""
    return CompletionRequest(
        messages=with_summary(window, summary),
        system=system_prompt(rules.system_prompt, profile),
        max_tokens=rules.max_tokens if max_tokens is None else max_tokens,
        model=model,
        user_id=user_id,
    )


def build_request(
    rules: PromptRules,
    *,
    history: Sequence[Message],
    message: Message,
    profile: Profile,
    model: str,
    user_id: str,
    max_tokens: int | None = None,
    estimates: Sequence[int] | None = None,
    summary: str = "",
) -> CompletionRequest:
    """The model request of a turn: history and the new message, fitted to the budget.

    ``prompt_window`` then ``request_for``; ``summary`` (of the history before the
    window) goes at the head of the prompt.
    """
    return request_for(
        rules,
        prompt_window(rules, history, message, estimates),
        profile=profile,
        model=model,
        user_id=user_id,
        max_tokens=max_tokens,
        summary=summary,
    )


class _StoredTurnPart(Protocol):
    """What ``without_unanswered`` reads of a stored message."""

    @property
    def role(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def request_id(self) -> str: ...


_M = TypeVar("_M", bound=_StoredTurnPart)


def without_unanswered(stored: Sequence[_M]) -> list[_M]:
    """The stored history less the questions whose turn produced no answer.

    A turn that failed (or was cancelled) before the model said anything
    leaves its user message in the conversation, marked so, with no reply.
    Sent again it would be glued to the next question (two user turns in a
    row are merged), so the model would answer both. It stays stored and
    visible in GetConversation; only the model does not see it.
    """
    answered = {m.request_id for m in stored if m.role == "assistant" and m.request_id}
    return [
        m
        for m in stored
        if m.role != "user" or m.status == "complete" or (m.request_id and m.request_id in answered)
    ]
