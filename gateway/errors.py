"""The one mapping from gRPC status to HTTP status, and the error body.

Error bodies are ``{"detail": "...", "code": "<grpc code, lower case>"}``,
plus ``"reason"`` when the status carries a ``google.rpc.ErrorInfo`` of the
agent service's domain; a RetryInfo detail becomes a ``Retry-After`` header.
Most statuses map by code (``HTTP_STATUS``); a few reasons refine that
(``REASON_STATUS``), because one gRPC code can stand for failures a client must
treat differently:

- the provider rejected the service's credentials (FAILED_PRECONDITION):
  503 with no Retry-After, an operator must fix the key; a plain
  FAILED_PRECONDITION is the caller's and stays 400;
- the provider sent something that is not its protocol (UNAVAILABLE): 502;
- overloaded or rate limited upstream keeps 503/429 with its Retry-After.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2, status_pb2

_DETAILS_KEY = "grpc-status-details-bin"
# Retry-After of a 503 when no replica of the agent service could take the call.
UNREACHABLE_RETRY_S = 1.0
# What gRPC's own statuses say when a call found no replica to go to (as opposed to a
# connection that broke during the call).
_NO_REPLICA = (
    "failed to connect",
    "connections to all backends failing",
    "dns resolution failed",
    "name resolution",
    "no children",
)
# ErrorInfo.domain of the agent service's reasons (service/errors.py ERROR_DOMAIN).
ERROR_DOMAIN = "agent.v1.AgentService"

HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


@dataclass(frozen=True, slots=True)
class ReasonRule:
    """How an ErrorInfo reason overrides the code's HTTP status."""

    status: int
    retryable: bool  # False: drop any Retry-After (retrying cannot help)


REASON_STATUS: dict[str, ReasonRule] = {
    "PROVIDER_CREDENTIALS_REJECTED": ReasonRule(503, retryable=False),
    "PROVIDER_NOT_CONFIGURED": ReasonRule(503, retryable=False),
    "PROVIDER_INVALID_RESPONSE": ReasonRule(502, retryable=False),
}


@dataclass(frozen=True, slots=True)
class GatewayError:
    """A gRPC failure, ready to be sent as HTTP or as an SSE error event."""

    status: int
    code: str
    detail: str
    retry_after_s: float | None = None
    reason: str | None = None  # ErrorInfo.reason of the agent service's domain

    def body(self) -> dict[str, object]:
        body: dict[str, object] = {"detail": self.detail, "code": self.code}
        if self.reason is not None:
            body["reason"] = self.reason
        if self.retry_after_s is not None:
            body["retry_after_s"] = self.retry_after_s
        return body

    def event_data(self) -> dict[str, object]:
        """The data of an SSE ``error`` event: the body's fields, plus the HTTP status."""
        data: dict[str, object] = {"code": self.code, "message": self.detail}
        data["status"] = self.status
        if self.reason is not None:
            data["reason"] = self.reason
        if self.retry_after_s is not None:
            data["retry_after_s"] = self.retry_after_s
        return data

    def headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.status == 401:
            # RFC 9110: a 401 names its scheme; RFC 6750 adds the error when a token was
            # presented and failed a check (no token at all gets the bare challenge).
            invalid = self.reason == "INVALID_TOKEN"
            headers["WWW-Authenticate"] = 'Bearer error="invalid_token"' if invalid else "Bearer"
        if self.retry_after_s is not None:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after_s)))
        return headers


@dataclass(frozen=True, slots=True)
class _Details:
    retry_after_s: float | None = None
    reason: str | None = None
    answered: bool = False  # the service's own status: it always carries the details key


def _details(metadata: grpc.aio.Metadata | None) -> _Details:
    """RetryInfo and (our domain's) ErrorInfo from the status details, if present."""
    retry_after_s: float | None = None
    reason: str | None = None
    answered = False
    for key, value in metadata or ():
        if key != _DETAILS_KEY or not isinstance(value, bytes):
            continue
        answered = True
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                delay = retry.retry_delay
                retry_after_s = float(delay.seconds + delay.nanos / 1e9)
            elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                if info.domain == ERROR_DOMAIN and info.reason:
                    reason = info.reason
    return _Details(retry_after_s, reason, answered)


def from_rpc_error(error: grpc.aio.AioRpcError) -> GatewayError:
    """Translate a failed call: by its ErrorInfo reason where one refines it, else by code."""
    code = error.code()
    detail = error.details() or code.name.lower()
    details = _details(error.trailing_metadata())
    status = HTTP_STATUS.get(code, 500)
    retry_after_s = details.retry_after_s
    if code is grpc.StatusCode.UNAVAILABLE and not details.answered:
        # Not an answer of the service (its statuses always carry the details key).
        if any(sign in detail.lower() for sign in _NO_REPLICA):
            # The call never reached a replica (none reachable, or all draining): another
            # try may find one.
            detail = f"the agent service is unreachable: {detail}"
            retry_after_s = UNREACHABLE_RETRY_S
        else:
            # The connection broke during the call: the service may have done the work.
            detail = f"the connection to the agent service was lost: {detail}"
    rule = REASON_STATUS.get(details.reason or "")
    if rule is not None:
        status = rule.status
        if not rule.retryable:
            retry_after_s = None
    return GatewayError(
        status=status,
        code=code.name.lower(),
        detail=detail,
        retry_after_s=retry_after_s,
        reason=details.reason,
    )
