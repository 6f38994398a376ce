"""Building one model request from what a turn knows: a pure function, no I/O.

The chat service reads the stored history and the user's profile; this module
turns them, with the new message, into the ``CompletionRequest`` a provider
gets. Keeping it pure keeps the rules (system prompt layering, merging, the
history budget) testable without a store or a provider.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from service.content import Message
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
) -> CompletionRequest:
    """The model request of a turn: history and the new message, fitted to the budget.

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

    return CompletionRequest(
        messages=stepped_window(
            messages, rules.history_budget_tokens, rules.history_watermark_tokens, estimate
        ),
        system=system_prompt(rules.system_prompt, profile),
        max_tokens=rules.max_tokens if max_tokens is None else max_tokens,
        model=model,
        user_id=user_id,
    )
