"""The conversation store interface and the records it deals in.

Both backends (SQLite, PostgreSQL) implement ``ConversationStore`` with the
same semantics; ``tests/store`` is the one contract suite run against both.
Every read or write names the acting user: a conversation owned by someone
else is reported exactly like a missing one (``NotFound``). A backend that
cannot reach its database raises ``service.errors.StoreUnavailable`` (503 with
a retry hint), not its driver's connection errors.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from types import TracebackType
from typing import Literal, Self

from service.content import Block

Role = Literal["user", "assistant"]
MessageStatus = Literal["complete", "cancelled", "failed"]


@dataclass(frozen=True, slots=True)
class Conversation:
    """A user's conversation; ``updated_at`` moves whenever messages are appended."""

    id: str
    user_id: str
    title: str
    created_at: datetime
    updated_at: datetime
    message_count: int


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One persisted turn, with the usage and provenance it was stored with."""

    id: int
    conversation_id: str
    role: Role
    content: tuple[Block, ...]
    status: MessageStatus
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    request_id: str
    created_at: datetime
    # history.estimate_tokens of (role, content), computed once when stored.
    estimated_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A turn to append; the store assigns its id and timestamp."""

    role: Role
    content: Sequence[Block]
    status: MessageStatus = "complete"
    provider: str = ""
    model: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    request_id: str = ""
    cache_creation_input_tokens: int = 0  # see content.Usage
    cache_read_input_tokens: int = 0


@dataclass(frozen=True, slots=True)
class NewSummary:
    """A summary of a conversation's messages up to ``covered_up_to`` (a message id, included).

    The usage is what the summary request spent; the store charges it to the user.
    """

    text: str
    covered_up_to: int
    provider: str = ""
    model: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ConversationSummary:
    """The summary kept with a conversation (``history.summarize``).

    It stands for every message up to and including ``covered_up_to``, with the
    summary kept before it folded in; the usage is its latest request's.
    """

    conversation_id: str
    text: str
    covered_up_to: int
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """A user's accumulated token usage; ``turns`` counts stored assistant messages."""

    input_tokens: int
    output_tokens: int
    turns: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


@dataclass(frozen=True, slots=True)
class TokenSpend:
    """Tokens a user spent in one UTC day and in that day's month so far.

    ``*_tokens`` count input + output; prompt-cache writes and reads are kept
    apart, so ``limits`` can weigh them as the provider bills them.
    """

    day_tokens: int
    month_tokens: int
    day_cache_creation: int = 0
    day_cache_read: int = 0
    month_cache_creation: int = 0
    month_cache_read: int = 0


@dataclass(frozen=True, slots=True)
class UserProfileRecord:
    """Per-user settings read by ``/reload_user``."""

    user_id: str
    display_name: str
    system_prompt: str


class ConversationStore(ABC):
    """Durable conversations, messages, usage totals and user profiles.

    ``open()`` connects and applies pending schema migrations; it is
    idempotent and safe when several processes open the same database.
    The store is also an async context manager that opens and closes itself.
    """

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def create_conversation(self, user_id: str, title: str = "") -> Conversation: ...

    @abstractmethod
    async def get_conversation(self, user_id: str, conversation_id: str) -> Conversation:
        """Raise NotFound when missing or owned by another user."""

    @abstractmethod
    async def current_conversation(self, user_id: str) -> Conversation | None:
        """The user's conversation most recently created or appended to."""

    @abstractmethod
    async def list_conversations(
        self, user_id: str, page_size: int, page_token: str = ""
    ) -> tuple[list[Conversation], str]:
        """A page of conversations, latest activity first, and the next token ("" at the end).

        Keyset-paginated: conversations created while paging do not shift later
        pages. page_size is capped at MAX_PAGE_SIZE; InvalidRequest for a
        page_size below 1 or a malformed token.
        """

    @abstractmethod
    async def delete_conversation(self, user_id: str, conversation_id: str) -> None: ...

    @abstractmethod
    async def messages(self, user_id: str, conversation_id: str) -> list[StoredMessage]:
        """All messages of the conversation, oldest first."""

    @abstractmethod
    async def recent_messages(
        self, user_id: str, conversation_id: str, budget_tokens: int
    ) -> list[StoredMessage]:
        """The newest messages that fit ``budget_tokens``, oldest first (see ``RecentWindow``).

        Reads newest first and stops at the window's edge, so the cost
        follows the budget, not the length of the conversation.
        """

    @abstractmethod
    async def messages_page(
        self, user_id: str, conversation_id: str, page_size: int, page_token: str = ""
    ) -> tuple[list[StoredMessage], str]:
        """A page of messages, oldest first, and the token of the next page ("" at the end).

        Pages go forward in time from the first message. Keyset-paginated on
        the message id: messages appended while paging show up on later pages,
        none is served twice. page_size is capped at MAX_PAGE_SIZE;
        InvalidRequest for a page_size below 1 or a token that is malformed
        or from another conversation.
        """

    @abstractmethod
    async def append_messages(
        self,
        user_id: str,
        conversation_id: str,
        messages: Sequence[NewMessage],
        *,
        create: bool = False,
    ) -> list[StoredMessage]:
        """Store the messages in one transaction, count their usage, return them as stored.

        ``create``: the conversation ``conversation_id`` (an id from
        ``new_conversation_id``) is created in the same transaction if it does
        not exist yet, so a turn's new conversation never exists without its
        first messages. An empty title is set from the first user text. Raises
        NotFound (and writes nothing) when the conversation is missing or not the user's,
        InvalidRequest (and writes nothing) for an empty or malformed batch.
        """

    @abstractmethod
    async def clear_conversation(self, user_id: str, conversation_id: str) -> int:
        """Delete the messages (and the summary) but keep the conversation; usage stays."""

    @abstractmethod
    async def get_summary(self, user_id: str, conversation_id: str) -> ConversationSummary | None:
        """The conversation's summary (None: it has none); NotFound like ``messages``."""

    @abstractmethod
    async def save_summary(self, user_id: str, conversation_id: str, summary: NewSummary) -> bool:
        """Charge a summary request's usage to the user and keep its text if it is news.

        One transaction. The usage is always added to the user's totals (not as a
        turn) and to the UTC day's spend, as ``append_messages`` adds a turn's: the
        provider was paid whatever becomes of the text. The text replaces the
        conversation's summary only when the conversation is the user's, still holds
        the message ``covered_up_to`` (a clear removed it) and the summary kept covers
        less. Returns whether it was kept. InvalidRequest (nothing written) for text
        the store cannot hold.
        """

    @abstractmethod
    async def usage_totals(self, user_id: str) -> UsageTotals: ...

    @abstractmethod
    async def token_spend(self, user_id: str, day: date) -> TokenSpend:
        """Spend on the UTC ``day`` and in its month up to that day.

        ``append_messages`` adds each batch's input + output tokens (and its cache
        writes and reads) to the UTC day it is stored on, in the same transaction.
        ``clear_conversation`` and ``delete_conversation`` leave spend as it is.
        """

    @abstractmethod
    async def count_users(self) -> int:
        """How many distinct users own at least one conversation."""

    @abstractmethod
    async def get_profile(self, user_id: str) -> UserProfileRecord | None: ...

    @abstractmethod
    async def put_profile(self, profile: UserProfileRecord) -> None:
        """Insert or replace the user's profile."""

    @abstractmethod
    async def ping(self) -> bool:
        """True when the database answers a trivial query."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


# --- shared by the backends: validation and the stored form of values --------
