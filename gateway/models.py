"""Request and response bodies of the REST API (also the OpenAPI schema).

Field names follow the original spec (``message``, ``conversation_id``,
``user_id``, ``priority`` → ``response``, ``conversation_id``,
``request_id``); the rest are additions.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_REQUEST_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


class ChatRequest(BaseModel):
    """One chat turn."""

    model_config = ConfigDict(extra="forbid")

    message: str = Field(..., min_length=1, description="The user's message; '/' starts a command")
    conversation_id: str | None = Field(
        None, description="Conversation to continue; omitted: the current one"
    )
    user_id: str | None = Field(None, description="User to act as (shared-token/open modes)")
    priority: int = Field(5, ge=1, le=10, description="1 is highest, 10 lowest")
    new_conversation: bool = Field(False, description="Start a fresh conversation")
    provider: Literal["anthropic", "ollama"] | None = Field(None, description="Provider override")
    model: str | None = Field(None, description="Model override")
    request_id: str | None = Field(
        None,
        pattern=_REQUEST_ID_PATTERN,
        description=(
            "Client-chosen id: to cancel early, to re-attach, and to retry safely (the same id "
            "and message attach to the first request; another message is 409)"
        ),
    )
    on_disconnect: Literal["cancel", "continue"] | None = Field(
        None,
        description=(
            "When the client goes away: cancel the request, or let it continue so the client "
            "can re-attach; omitted: the service's stream.on_disconnect"
        ),
    )

    @field_validator("message")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("message must not be blank")
        return value


class RequestRef(BaseModel):
    """Names a request for queue status or cancel."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(..., min_length=1, max_length=64)
    user_id: str | None = None


class UsageBody(BaseModel):
    """Token counts."""

    input_tokens: int
    output_tokens: int


class ToolCallBody(BaseModel):
    """A tool call made during the turn."""

    id: str
    name: str
    arguments: dict[str, Any]
    result: str
    is_error: bool


class ChatResponse(BaseModel):
    """The answer to one chat turn."""

    response: str
    conversation_id: str
    request_id: str
    usage: UsageBody
    provider: str
    model: str
    stop_reason: str
    tool_calls: list[ToolCallBody]


class QueueStatusResponse(BaseModel):
    """Where a request stands."""

    request_id: str
    state: Literal["queued", "running", "completed", "cancelled", "failed", "unspecified"]
    position: int = Field(description="Requests ahead; -1 when not waiting")
    estimated_wait_s: float
    priority: int
    provider: str


class CancelResponse(BaseModel):
    """The outcome of a cancel."""

    request_id: str
    state: str
    cancelled: bool


class ConversationSummaryBody(BaseModel):
    """A conversation without its messages."""

    conversation_id: str
    title: str
    created_at: str
    updated_at: str
    message_count: int


class ConversationListResponse(BaseModel):
    """A page of the caller's conversations, newest first."""

    conversations: list[ConversationSummaryBody]
    next_page_token: str


class ErrorBody(BaseModel):
    """Every error response."""

    detail: str | list[Any]
    code: str
    retry_after_s: float | None = None
