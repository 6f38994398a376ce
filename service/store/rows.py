"""Helpers both store backends share: input checks, titles, row decoding,
the JSON form of content blocks, and page tokens."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

from service.content import Block, TextBlock, ToolResultBlock, ToolUseBlock
from service.errors import InvalidRequest, NotFound
from service.store.base import NewMessage, NewSummary, StoredMessage

TITLE_MAX_CHARS = 60
MAX_PAGE_SIZE = 1000
_ROLES = frozenset({"user", "assistant"})
_STATUSES = frozenset({"complete", "cancelled", "failed"})


def new_conversation_id() -> str:
    """A random, unguessable id (128 bits from the OS generator)."""
    return "c_" + secrets.token_hex(16)


def utc_now() -> datetime:
    return datetime.now(UTC)


def check_page_size(page_size: int) -> int:
    if page_size < 1:
        raise InvalidRequest(f"page_size must be at least 1, got {page_size}")
    return min(page_size, MAX_PAGE_SIZE)


def check_text(what: str, value: str) -> None:
    """Reject text no backend can store: NUL (PostgreSQL refuses it) or lone surrogates."""
    if "\x00" in value or not _encodable(value):
        raise InvalidRequest(f"{what} contains characters that cannot be stored")


def check_user_id(user_id: str) -> None:
    if not user_id:
        raise InvalidRequest("user_id must not be empty")
    check_text("user_id", user_id)


def check_ids(user_id: str, conversation_id: str) -> None:
    """Check the user; an id that cannot exist is simply not found (and never queried)."""
    check_user_id(user_id)
    if not conversation_id or not _encodable(conversation_id) or "\x00" in conversation_id:
        raise not_found(conversation_id)


def check_batch(messages: Sequence[NewMessage]) -> None:
    """Reject a batch before anything is written, so bad input never stores half a turn."""
    if not messages:
        raise InvalidRequest("append_messages needs at least one message")
    for m in messages:
        if m.role not in _ROLES:
            raise InvalidRequest(f"unknown message role {m.role!r}")
        if m.status not in _STATUSES:
            raise InvalidRequest(f"unknown message status {m.status!r}")
        counts = (
            m.input_tokens,
            m.output_tokens,
            m.cache_creation_input_tokens,
            m.cache_read_input_tokens,
        )
        if not all(0 <= count < 2**62 for count in counts):
            raise InvalidRequest("token counts must be non-negative integers")
        check_text("provider", m.provider)
        check_text("model", m.model)
        check_text("request_id", m.request_id)


def check_summary(summary: NewSummary) -> None:
    """Reject a summary no backend can store, before anything is written (or charged)."""
    counts = (
        summary.covered_up_to,
        summary.input_tokens,
        summary.output_tokens,
        summary.cache_creation_input_tokens,
        summary.cache_read_input_tokens,
    )
    if not all(0 <= count < 2**62 for count in counts):
        raise InvalidRequest("a summary's message id and token counts must be non-negative")
    check_text("summary", summary.text)
    check_text("provider", summary.provider)
    check_text("model", summary.model)


def title_from(messages: Sequence[NewMessage]) -> str:
    """The first user text, whitespace collapsed and cut to about TITLE_MAX_CHARS."""
    for m in messages:
        if m.role != "user":
            continue
        for block in m.content:
            if isinstance(block, TextBlock):
                # The title is a column of its own: drop what check_text would refuse.
                clean = block.text.replace("\x00", " ").encode("utf-8", "ignore").decode()
                text = " ".join(clean.split())
                if text:
                    return _shorten(text)
    return ""


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shorten(text: str) -> str:
    if len(text) <= TITLE_MAX_CHARS:
        return text
    cut = text[: TITLE_MAX_CHARS - 1]
    # Prefer ending on a word boundary unless that would drop too much.
    space = cut.rfind(" ")
    if space >= TITLE_MAX_CHARS // 2:
        cut = cut[:space]
    return cut.rstrip() + "…"


def not_found(conversation_id: str) -> NotFound:
    """The one error for a conversation that is missing or someone else's."""
    return NotFound(f"conversation {conversation_id!r} not found")


def batch_usage(messages: Sequence[NewMessage]) -> tuple[int, int, int]:
    """(input tokens, output tokens, assistant turns) that a batch adds to its user's totals."""
    return (
        sum(m.input_tokens for m in messages),
        sum(m.output_tokens for m in messages),
        sum(1 for m in messages if m.role == "assistant"),
    )


def batch_cache_usage(messages: Sequence[NewMessage]) -> tuple[int, int]:
    """(cache creation, cache read) input tokens that a batch adds to its user's totals."""
    return (
        sum(m.cache_creation_input_tokens for m in messages),
        sum(m.cache_read_input_tokens for m in messages),
    )


def stored_message(
    message_id: int, conversation_id: str, m: NewMessage, created_at: datetime, estimate: int
) -> StoredMessage:
    """The StoredMessage for a NewMessage just written, without reading it back."""
    return StoredMessage(
        id=message_id,
        conversation_id=conversation_id,
        role=m.role,
        content=tuple(m.content),
        status=m.status,
        provider=m.provider,
        model=m.model,
        input_tokens=m.input_tokens,
        output_tokens=m.output_tokens,
        request_id=m.request_id,
        created_at=created_at,
        estimated_tokens=estimate,
        cache_creation_input_tokens=m.cache_creation_input_tokens,
        cache_read_input_tokens=m.cache_read_input_tokens,
    )


def encode_content(blocks: Sequence[Block]) -> str:
    """Blocks as a JSON list of objects tagged by "type"."""
    items: list[dict[str, object]] = []
    for block in blocks:
        if isinstance(block, TextBlock):
            items.append({"type": "text", "text": block.text})
        elif isinstance(block, ToolUseBlock):
            items.append(
                {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
            )
        elif isinstance(block, ToolResultBlock):
            items.append(
                {
                    "type": "tool_result",
                    "tool_use_id": block.tool_use_id,
                    "content": block.content,
                    "is_error": block.is_error,
                    "name": block.name,
                }
            )
        else:
            raise InvalidRequest(f"unsupported content block {type(block).__name__}")
    try:
        # ensure_ascii: lone surrogates and control characters become escapes,
        # so any Python string round-trips through a UTF-8 text column.
        return json.dumps(items, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"content is not JSON-serializable: {exc}") from exc


def decode_content(raw: str) -> tuple[Block, ...]:
    """Rebuild the block dataclasses from ``encode_content``'s JSON."""
    blocks: list[Block] = []
    for item in json.loads(raw):
        kind = item.get("type")
        if kind == "text":
            blocks.append(TextBlock(text=item["text"]))
        elif kind == "tool_use":
            blocks.append(ToolUseBlock(id=item["id"], name=item["name"], input=item["input"]))
        elif kind == "tool_result":
            blocks.append(
                ToolResultBlock(
                    tool_use_id=item["tool_use_id"],
                    content=item["content"],
                    is_error=bool(item.get("is_error", False)),
                    name=item.get("name", ""),
                )
            )
        else:
            raise ValueError(f"stored content has an unknown block type {kind!r}")
    return tuple(blocks)


def encode_page_token(activity: int) -> str:
    """An opaque cursor: the activity sequence number of the last conversation served."""
    raw = json.dumps({"v": 1, "before": activity}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str) -> int | None:
    """The cursor's activity number; None for the first page; InvalidRequest if malformed."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        before = data["before"]
        if data["v"] != 1 or type(before) is not int or not 0 < before < 2**63:
            raise ValueError(token)
    except (ValueError, TypeError, KeyError) as exc:
        raise InvalidRequest("page_token is not valid; start again without one") from exc
    return before
