"""Rows of the shared queue as the port's records, and errors as columns and back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.errors import (
    AgentError,
    Code,
    DeadlineExceeded,
    LimitReached,
    NotFound,
    ProviderError,
    QueueFull,
    Reason,
    RequestCancelled,
    ServiceUnavailable,
    UpstreamLost,
)
from service.scheduler.registry import RequestInfo

# The error classes a request can end with; anything else comes back as AgentError.
_KINDS: Mapping[str, type[AgentError]] = {
    cls.__name__: cls
    for cls in (
        AgentError,
        DeadlineExceeded,
        LimitReached,
        NotFound,
        ProviderError,
        QueueFull,
        RequestCancelled,
        ServiceUnavailable,
        UpstreamLost,
    )
}

REQUEST_COLUMNS = (
    "user_id, request_id, owner, state, priority, front, order_key, seq, conversation_id,"
    " provider, model, host, slot, granted, closed, lease_epoch, cancel_requested, tried,"
    " error_kind, error_code, error_message, error_reason, retry_after_s,"
    " enqueued_at, started_at, finished_at, payload"
)


def error_columns(error: AgentError | None) -> tuple[str | None, ...]:
    """(kind, code, message, reason) of an error, all None for none."""
    if error is None:
        return (None, None, None, None)
    kind = type(error).__name__ if type(error).__name__ in _KINDS else "AgentError"
    reason = str(error.reason) if error.reason is not None else None
    return (kind, str(error.code), error.message, reason)


def row_error(row: Mapping[str, Any]) -> AgentError | None:
    """The error a row ended with, rebuilt as the class it was raised as."""
    if row["error_code"] is None:
        return None
    cls = _KINDS.get(row["error_kind"] or "", AgentError)
    reason = Reason(row["error_reason"]) if row["error_reason"] else None
    error = cls.__new__(cls)
    AgentError.__init__(
        error,
        row["error_message"] or "",
        code=Code(row["error_code"]),
        retry_after_s=row["retry_after_s"],
        reason=reason,
    )
    return error


def row_info(
    row: Mapping[str, Any], position: int = -1, estimated_wait_s: float = 0.0
) -> RequestInfo:
    return RequestInfo(
        request_id=row["request_id"],
        user_id=row["user_id"],
        provider=row["provider"],
        priority=row["priority"],
        state=row["state"],
        position=position,
        estimated_wait_s=estimated_wait_s,
        enqueued_at=row["enqueued_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        model=row["model"],
        backend=row["host"] or "",
        conversation_id=row["conversation_id"],
        error=row_error(row),
        owner=row["owner"],
    )
