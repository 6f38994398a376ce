"""Request and response bodies of the REST API (also the OpenAPI schema).

Field names follow the original spec (``message``, ``conversation_id``,
``user_id``, ``priority`` → ``response``, ``conversation_id``,
``request_id``); the rest are additions.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, field_validator

# The proto's request id rule; the X-Request-ID header follows it too.
REQUEST_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


def _encodable(value: str) -> str:
    # JSON's \ud800 escapes decode to lone surrogates, which protobuf (UTF-8) cannot carry.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (no lone surrogates)") from None
    return value


Text = Annotated[str, AfterValidator(_encodable)]
"""A string field of a request body: any Unicode text that UTF-8 can encode."""

# The service's rule for user ids (safe as a file name; no leading dot), or empty: the default user.
USER_ID_PATTERN = r"^([A-Za-z0-9_@-][A-Za-z0-9._@-]{0,127})?$"
_USER_ID_DOC = "User to act as (shared-token/open modes); 1-128 of A-Z a-z 0-9 . _ @ -"

_CHAT_EXAMPLE: dict[str, JsonValue] = {
    "message": "What is 17*23?",
    "user_id": "alice",
    "priority": 3,
}


class ChatRequest(BaseModel):
    """One chat turn."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_CHAT_EXAMPLE]})

    message: Text = Field(..., min_length=1, description="The user's message; '/' starts a command")
    conversation_id: Text | None = Field(
        None, description="Conversation to continue; omitted: the current one"
    )
    user_id: str | None = Field(None, pattern=USER_ID_PATTERN, description=_USER_ID_DOC)
    # strict: JSON true, 1.0 and "1" are not integers (lax mode would take them as 1).
    priority: int = Field(5, ge=1, le=10, strict=True, description="1 is highest, 10 lowest")
    new_conversation: bool = Field(False, description="Start a fresh conversation")
    provider: Literal["anthropic", "ollama"] | None = Field(None, description="Provider override")
    model: Text | None = Field(None, description="Model override")
    request_id: str | None = Field(
        None,
        pattern=REQUEST_ID_PATTERN,
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

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"request_id": "r_1", "user_id": "alice"}]}
    )

    request_id: Text = Field(..., min_length=1, max_length=64)
    user_id: str | None = Field(None, pattern=USER_ID_PATTERN, description=_USER_ID_DOC)


class UsageBody(BaseModel):
    """Token counts; ``input_tokens`` leaves out the input written to or read from the cache."""

    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int


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


class RequestSummaryBody(BaseModel):
    """One request waiting or running."""

    request_id: str
    user_id: str
    state: str
    position: int = Field(description="Requests ahead; -1 when running")
    estimated_wait_s: float
    priority: int
    provider: str
    model: str
    enqueued_at: str | None
    started_at: str | None


class RequestListResponse(BaseModel):
    """The requests the caller may see; ``all_users`` is true for an admin."""

    requests: list[RequestSummaryBody]
    all_users: bool


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


class FieldErrorBody(BaseModel):
    """One field that failed validation (the offending value is never echoed)."""

    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    """Every error response."""

    detail: str = Field(description="What went wrong, for a human")
    code: str = Field(
        description="gRPC code in lower case, or one of the gateway's own codes "
        "(payload_too_large, not_found, method_not_allowed)"
    )
    reason: str | None = Field(
        None, description="The service's ErrorInfo reason, when it gave one (e.g. PROVIDER_FAILED)"
    )
    retry_after_s: float | None = Field(None, description="When to retry (429/503 only)")
    errors: list[FieldErrorBody] | None = Field(None, description="Each invalid field (422 only)")


class ProbeResponse(BaseModel):
    """A probe's answer: live (the process) or ready (service serving, provider reachable)."""

    status: Literal["ok"]
    service: str | None = Field(None, description="The service's gRPC health status (ready)")
    provider: str | None = Field(
        None, description="The default provider checked, or 'unchecked' (ready)"
    )


class NotReadyResponse(BaseModel):
    """Why the gateway is not ready for traffic (a 503 of /health/ready)."""

    status: Literal["unavailable"]
    detail: str
    code: str = Field(description="`unavailable`")
    reason: str | None = Field(
        None, description="`STORE_UNAVAILABLE` when the service cannot reach its database"
    )
    retry_after_s: float | None = Field(None, description="When to probe again (draining)")


class HealthResponse(BaseModel):
    """Health of the gateway and of the service behind it."""

    status: Literal["ok", "unavailable"]
    service: str = Field(description="The service's gRPC health status, or 'unreachable'")
    detail: str | None = Field(None, description="Why the service is unreachable")
    code: str | None = Field(None, description="'unavailable' when status is not ok")


class TextBlockBody(BaseModel):
    """Text of a message."""

    type: Literal["text"]
    text: str


class ToolUseBlockBody(BaseModel):
    """A tool call the model made."""

    type: Literal["tool_use"]
    id: str
    name: str
    input: Any


class ToolResultBlockBody(BaseModel):
    """The result of a tool call."""

    type: Literal["tool_result"]
    tool_use_id: str
    name: str
    content: str
    is_error: bool


ContentBlockBody = Annotated[
    TextBlockBody | ToolUseBlockBody | ToolResultBlockBody, Field(discriminator="type")
]


class MessageBody(BaseModel):
    """One stored message."""

    role: str
    text: str
    content: list[ContentBlockBody]
    status: Literal["complete", "cancelled", "failed", "unspecified"]
    provider: str
    model: str
    usage: UsageBody
    request_id: str
    created_at: str


class ConversationResponse(ConversationSummaryBody):
    """One conversation and a page of its messages, oldest first."""

    messages: list[MessageBody]
    next_page_token: str = Field(
        description="Pass as page_token for the next (later) messages; empty on the last page"
    )


class DeleteResponse(BaseModel):
    """The outcome of a delete."""

    conversation_id: str
    deleted: bool
