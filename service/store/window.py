"""Reading a conversation in bounded pieces: the newest messages that fit a
token budget (a turn's history) and forward pages (GetConversation).

Both backends read newest-first on the ``(conversation_id, id)`` index and
stop as soon as ``RecentWindow`` says so, so a turn reads about what it
sends, however long the conversation has grown.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence

from service.content import Block, Message, ToolResultBlock
from service.errors import InvalidRequest
from service.history import estimate_tokens
from service.store.base import Role, StoredMessage


def estimate_message(role: Role, content: Sequence[Block]) -> int:
    """The token estimate stored with a message: exactly ``history.estimate_tokens``."""
    return estimate_tokens(Message(role, content))


def opens_turn(message: StoredMessage) -> bool:
    """A plain user message: the only place a history may start (see ``fit_history``)."""
    return message.role == "user" and not any(
        isinstance(block, ToolResultBlock) for block in message.content
    )


class RecentWindow:
    """Collects messages offered newest first until the budget is spent.

    It keeps the newest messages whose estimates sum to at most the budget,
    then goes on taking older ones, whatever they cost, until the oldest kept
    is a plain user message. A tool result therefore never loses the tool
    call it answers, and the window starts where a provider needs it to. The
    newest message is always kept, so the current turn survives a budget
    smaller than itself; a conversation with no plain user message is taken
    whole. ``fit_history`` then trims the merged result exactly.
    """

    def __init__(self, budget_tokens: int) -> None:
        self._budget = budget_tokens
        self._total = 0
        self._taken: list[StoredMessage] = []

    def offer(self, message: StoredMessage) -> bool:
        """Take ``message`` (the next older one) if it belongs; False: stop reading."""
        total = self._total + message.estimated_tokens
        if total > self._budget and self._taken and opens_turn(self._taken[-1]):
            return False
        self._taken.append(message)
        self._total = total
        return True

    def messages(self) -> list[StoredMessage]:
        """What was taken, oldest first."""
        return self._taken[::-1]

    def rows_wanted(self, cap: int) -> int:
        """About how many more rows the window will take: the next batch size for a reader.

        The budget left divided by the average estimate so far, with some room
        for the walk back to a plain user message; between 16 and ``cap``.
        """
        if not self._taken:
            return cap
        left = max(self._budget - self._total, 0)
        average = max(self._total / len(self._taken), 1.0)
        return max(16, min(cap, int(left / average * 1.25) + 16))


def encode_message_token(conversation_id: str, after_id: int) -> str:
    """An opaque cursor for the next page: the conversation and the last message id served."""
    raw = json.dumps({"v": 1, "c": conversation_id, "after": after_id}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_message_token(conversation_id: str, token: str) -> int:
    """The id to continue after (0 for the first page); InvalidRequest if the token is bad.

    A token is only good for the conversation it came from: another
    conversation's token is refused rather than silently skipping messages.
    """
    if not token:
        return 0
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        after = data["after"]
        if data["v"] != 1 or type(after) is not int or not 0 < after < 2**63:
            raise ValueError(token)
        same = data["c"] == conversation_id
    except (ValueError, TypeError, KeyError) as exc:
        raise InvalidRequest("page_token is not valid; start again without one") from exc
    if not same:
        raise InvalidRequest("page_token belongs to another conversation; start again without one")
    return after
