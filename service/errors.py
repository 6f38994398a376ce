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
    ├── RequestCancelled       CANCELLED          cancelled by its owner or a disconnect
    ├── DeadlineExceeded       DEADLINE_EXCEEDED  request_timeout ran out
    ├── ServiceUnavailable     UNAVAILABLE        shutting down / not admitting
    └── ProviderError          any code           the upstream LLM failed; code chosen by the bridge
        └── UpstreamLost       UNAVAILABLE        the connection to the host failed or broke
"""

from __future__ import annotations

from enum import StrEnum


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


class AgentError(Exception):
    """Base of every error the service reports to a caller."""

    code: Code = Code.INTERNAL

    def __init__(
        self, message: str, *, code: Code | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.retry_after_s = retry_after_s


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
    """A waiting-request cap was reached; retry_after_s says when to try again."""

    code = Code.RESOURCE_EXHAUSTED


class RequestCancelled(AgentError):
    """The request was cancelled by its owner or because its client went away."""

    code = Code.CANCELLED


class DeadlineExceeded(AgentError):
    """The queue-wait or total deadline ran out."""

    code = Code.DEADLINE_EXCEEDED


class ServiceUnavailable(AgentError):
    """The service is not admitting work (for example while shutting down)."""

    code = Code.UNAVAILABLE


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
    ) -> None:
        super().__init__(message, code=code, retry_after_s=retry_after_s)
        self.refused = refused
