"""Domain errors of the service.

Domain code raises these; the one mapping to gRPC status codes lives in
``service.rpc.errors`` and the one mapping to HTTP lives in the gateway.
Vendor exceptions never escape ``service.providers``: bridges translate
them into ``ProviderError`` with the code that fits.

    AgentError                 base; carries a Code and an optional retry hint
    ├── InvalidRequest         INVALID_ARGUMENT   the caller sent something unusable
    ├── Unauthenticated        UNAUTHENTICATED    no or unknown token
    ├── PermissionDenied       PERMISSION_DENIED  a token acting for another user
    ├── NotFound               NOT_FOUND          absent, or owned by someone else
    ├── QueueFull              RESOURCE_EXHAUSTED a queue cap was hit (retry hint)
    ├── LimitReached           RESOURCE_EXHAUSTED a per-user limit was hit (retry hint)
    ├── RequestCancelled       CANCELLED          cancelled by its owner or a disconnect
    ├── DeadlineExceeded       DEADLINE_EXCEEDED  request_timeout ran out
    ├── ServiceUnavailable     UNAVAILABLE        shutting down / not admitting
    │   └── StoreUnavailable   UNAVAILABLE        the database cannot be reached (retry hint)
    └── ProviderError          any code           the upstream LLM failed; code chosen by the bridge
        └── UpstreamLost       UNAVAILABLE        the connection to the host failed or broke

An error may also carry a ``Reason`` (with metadata such as the provider's
name): it travels as ``google.rpc.ErrorInfo`` (AIP-193) in the status details,
so a client can tell apart failures that share a code, e.g. "the provider
rejected our credentials" (FAILED_PRECONDITION, an operator problem) from a
client's own precondition failure, or "the provider sent garbage" from "the
provider is overloaded" (both UNAVAILABLE).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

# ErrorInfo.domain of every reason below (AIP-193: the service that defines them).
ERROR_DOMAIN = "agent.v1.AgentService"


class Code(StrEnum):
    """Status codes; the names are gRPC's, so the mapping to grpc.StatusCode is by name."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    ABORTED = "ABORTED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    CANCELLED = "CANCELLED"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    UNAVAILABLE = "UNAVAILABLE"
    UNIMPLEMENTED = "UNIMPLEMENTED"
    INTERNAL = "INTERNAL"


class Reason(StrEnum):
    """Why an upstream call failed, finer than the code (ErrorInfo.reason, UPPER_SNAKE_CASE)."""

    # The provider refused the service's own key: the operator must fix it, retrying won't help.
    PROVIDER_CREDENTIALS_REJECTED = "PROVIDER_CREDENTIALS_REJECTED"
    # The provider cannot be used as configured (e.g. no API key at all).
    PROVIDER_NOT_CONFIGURED = "PROVIDER_NOT_CONFIGURED"
    PROVIDER_MODEL_NOT_FOUND = "PROVIDER_MODEL_NOT_FOUND"
    PROVIDER_REJECTED_REQUEST = "PROVIDER_REJECTED_REQUEST"
    PROVIDER_RATE_LIMITED = "PROVIDER_RATE_LIMITED"
    PROVIDER_OVERLOADED = "PROVIDER_OVERLOADED"
    PROVIDER_FAILED = "PROVIDER_FAILED"  # a 5xx, or an error the provider reported mid-stream
    PROVIDER_UNREACHABLE = "PROVIDER_UNREACHABLE"
    PROVIDER_STREAM_BROKEN = "PROVIDER_STREAM_BROKEN"  # the answer stopped before its end
    # The provider answered something that is not its protocol (bad JSON, unknown status).
    PROVIDER_INVALID_RESPONSE = "PROVIDER_INVALID_RESPONSE"
    PROVIDER_TIMEOUT = "PROVIDER_TIMEOUT"
    # A bearer token was presented but failed a check (RFC 6750 error="invalid_token").
    INVALID_TOKEN = "INVALID_TOKEN"  # noqa: S105 - a reason's name, not a secret
    # The conversation store (the database) cannot be reached: retry after the hint.
    STORE_UNAVAILABLE = "STORE_UNAVAILABLE"
    # The request goes on, on another service replica (this one drains): re-attach to it.
    REQUEST_MOVED = "REQUEST_MOVED"


class AgentError(Exception):
    """Base of every error the service reports to a caller."""

    code: Code = Code.INTERNAL

    def __init__(
        self,
        message: str,
        *,
        code: Code | None = None,
        retry_after_s: float | None = None,
        reason: Reason | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.retry_after_s = retry_after_s
        self.reason = reason
        self.metadata: dict[str, str] = dict(metadata or {})

    def copy(self) -> AgentError:
        """A fresh exception of the same class, status, reason and metadata.

        Each follower of a failed request raises its own copy: one exception
        object raised in several tasks would collect their tracebacks.
        """
        clone = type(self).__new__(type(self))
        Exception.__init__(clone, self.message)
        clone.__dict__.update(self.__dict__)
        clone.metadata = dict(self.metadata)
        return clone


class InvalidRequest(AgentError):
    """The request cannot be served as sent."""

    code = Code.INVALID_ARGUMENT


class Unauthenticated(AgentError):
    """No token, or a token the service does not know."""

    code = Code.UNAUTHENTICATED


class PermissionDenied(AgentError):
    """The token is valid but may not act as the user named."""

    code = Code.PERMISSION_DENIED


class NotFound(AgentError):
    """Absent, or belonging to another user (existence never leaks)."""

    code = Code.NOT_FOUND


class QueueFull(AgentError):
    """A waiting-request cap was reached; retry_after_s says when to try again.

    ``cap`` names it ("max_pending" or "max_pending_per_user"), for metrics.
    """

    code = Code.RESOURCE_EXHAUSTED

    def __init__(self, message: str, *, cap: str = "", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.cap = cap


class LimitReached(AgentError):
    """A per-user limit (rate, active requests, token budget); the message names it.

    ``limit`` is its configuration name ("requests_per_minute", "max_active",
    "tokens_per_day", "tokens_per_month"), for metrics.
    """

    code = Code.RESOURCE_EXHAUSTED

    def __init__(self, message: str, *, limit: str = "", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.limit = limit


class RequestCancelled(AgentError):
    """The request was cancelled by its owner or because its client went away."""

    code = Code.CANCELLED


class DeadlineExceeded(AgentError):
    """The queue-wait or total deadline ran out."""

    code = Code.DEADLINE_EXCEEDED


class ServiceUnavailable(AgentError):
    """The service is not admitting work (for example while shutting down)."""

    code = Code.UNAVAILABLE


class StoreUnavailable(ServiceUnavailable):
    """The conversation store cannot be reached (a database outage); retrying later helps.

    Always carries the ``STORE_UNAVAILABLE`` reason and a retry hint, so every
    route answers 503 with ``Retry-After`` while the database is away.
    """

    def __init__(self, message: str, *, retry_after_s: float = 2.0) -> None:
        super().__init__(message, retry_after_s=retry_after_s, reason=Reason.STORE_UNAVAILABLE)


class ProviderError(AgentError):
    """The LLM provider failed; the bridge picks the code and writes an actionable message."""

    code = Code.UNAVAILABLE


class UpstreamLost(ProviderError):
    """The connection to the upstream host could not be made or broke off.

    The host is at fault, not the request: a pool of hosts may run the request
    elsewhere. ``refused`` means no connection could be made at all.
    """

    code = Code.UNAVAILABLE

    def __init__(
        self,
        message: str,
        *,
        refused: bool = False,
        code: Code | None = None,
        retry_after_s: float | None = None,
        reason: Reason | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(
            message, code=code, retry_after_s=retry_after_s, reason=reason, metadata=metadata
        )
        self.refused = refused
