"""The one mapping from gRPC status to HTTP status, and the error body.

Error bodies are ``{"detail": "...", "code": "<grpc code, lower case>"}``;
a RetryInfo detail becomes a ``Retry-After`` header.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2, status_pb2

_DETAILS_KEY = "grpc-status-details-bin"

HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


@dataclass(frozen=True, slots=True)
class GatewayError:
    """A gRPC failure, ready to be sent as HTTP or as an SSE error event."""

    status: int
    code: str
    detail: str
    retry_after_s: float | None = None

    def body(self) -> dict[str, object]:
        body: dict[str, object] = {"detail": self.detail, "code": self.code}
        if self.retry_after_s is not None:
            body["retry_after_s"] = self.retry_after_s
        return body

    def headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.status == 401:
            headers["WWW-Authenticate"] = "Bearer"  # RFC 9110: a 401 names its scheme
        if self.retry_after_s is not None:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after_s)))
        return headers


def _retry_after(metadata: grpc.aio.Metadata | None) -> float | None:
    if not metadata:
        return None
    for key, value in metadata:
        if key != _DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                info = error_details_pb2.RetryInfo()
                detail.Unpack(info)
                return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    return None


def from_rpc_error(error: grpc.aio.AioRpcError) -> GatewayError:
    """Translate a failed call."""
    code = error.code()
    detail = error.details() or code.name.lower()
    if code is grpc.StatusCode.UNAVAILABLE and "failed to connect" in detail.lower():
        detail = f"the agent service is unreachable: {detail}"
    return GatewayError(
        status=HTTP_STATUS.get(code, 500),
        code=code.name.lower(),
        detail=detail,
        retry_after_s=_retry_after(error.trailing_metadata()),
    )
