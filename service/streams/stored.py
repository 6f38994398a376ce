"""How a request ended, once its event buffer is gone: from the scheduler's record and the store.

The scheduler keeps every request's record for ``queue.retention_s`` after it
ended, and the store keeps the turn's messages tagged with its request id, so
a client re-attaching late still learns the outcome: the stored answer of a
completed turn, or the error it ended with.
"""

from __future__ import annotations

from service.content import TextBlock, ToolResultBlock, ToolUseBlock, Usage
from service.errors import AgentError, Code, NotFound, RequestCancelled
from service.events import ToolRecord, TurnResult
from service.scheduler import COMMANDS, RequestInfo
from service.store.base import ConversationStore, StoredMessage


def conflict(request_id: str) -> AgentError:
    """The error for a request id reused with another message."""
    return AgentError(
        f"request_id {request_id!r} was already used for a different message; "
        "send a new request_id to ask something else (the same id and message re-attach)",
        code=Code.ALREADY_EXISTS,
    )


async def settled_answer(
    store: ConversationStore, ticket: RequestInfo, message: str | None
) -> TurnResult:
    """The stored answer of the ticket's request, or its outcome raised.

    ``message``, when given, must be the one the request was sent with (else
    ALREADY_EXISTS); it is checked against the stored user message.
    """
    rows = await _rows(store, ticket)
    if message is not None and rows:
        asked = "".join(b.text for b in rows[0].content if isinstance(b, TextBlock))
        if rows[0].role == "user" and asked != message:
            raise conflict(ticket.request_id)
    if ticket.state in ("queued", "running"):
        # Its run is only ever dropped after it ended; say so rather than guess.
        raise AgentError(
            f"request {ticket.request_id!r} is still going on but its events are not available",
            code=Code.UNAVAILABLE,
            retry_after_s=1.0,
        )
    if ticket.state == "cancelled":
        raise RequestCancelled(f"request {ticket.request_id} was cancelled")
    if ticket.state == "failed" and ticket.error is not None:
        raise ticket.error.copy()  # with its code, reason and retry hint
    if ticket.state == "failed":
        raise AgentError(
            f"request {ticket.request_id} failed; send the message again with a new request_id",
            code=Code.ABORTED,
        )
    if ticket.provider in (COMMANDS, "") or ticket.conversation_id is None:
        raise AgentError(
            f"the answer to command request {ticket.request_id} is no longer kept",
            code=Code.ABORTED,
        )
    answer = [m for m in rows if m.role == "assistant"]
    if not answer:
        raise NotFound(
            f"request {ticket.request_id} completed, but its answer is no longer stored "
            "(the conversation was cleared or deleted)"
        )
    return rebuild(ticket, rows)


async def _rows(store: ConversationStore, ticket: RequestInfo) -> list[StoredMessage]:
    if ticket.conversation_id is None:
        return []
    try:
        messages = await store.messages(ticket.user_id, ticket.conversation_id)
    except NotFound:
        return []
    return [m for m in messages if m.request_id == ticket.request_id]


def rebuild(ticket: RequestInfo, rows: list[StoredMessage]) -> TurnResult:
    """The TurnResult of a stored turn (the stop reason is not stored: empty)."""
    text: list[str] = []
    calls: dict[str, ToolUseBlock] = {}
    results: dict[str, ToolResultBlock] = {}
    usage = Usage()
    provider, model = ticket.provider, ticket.model
    for row in rows[1:]:  # rows[0] is the user's message
        for block in row.content:
            if isinstance(block, TextBlock) and row.role == "assistant":
                text.append(block.text)
            elif isinstance(block, ToolUseBlock):
                calls[block.id] = block
            elif isinstance(block, ToolResultBlock):
                results[block.tool_use_id] = block
        if row.role == "assistant":
            usage = usage + Usage(
                row.input_tokens,
                row.output_tokens,
                row.cache_creation_input_tokens,
                row.cache_read_input_tokens,
            )
            provider, model = row.provider or provider, row.model or model
    tools = tuple(
        ToolRecord(
            call.id,
            call.name,
            call.input,
            results[call.id].content if call.id in results else "",
            results[call.id].is_error if call.id in results else True,
        )
        for call in calls.values()
    )
    return TurnResult(
        response="".join(text),
        conversation_id=ticket.conversation_id or "",
        request_id=ticket.request_id,
        usage=usage,
        provider=provider,
        model=model,
        stop_reason="",
        tool_calls=tools,
    )
