"""gRPC status → HTTP: by code, refined by the agent service's ErrorInfo reasons.

Each case builds the status exactly as the service sends it (service.rpc.errors)
and reads it as the gateway does (gateway.errors.from_rpc_error).
"""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from gateway.errors import ERROR_DOMAIN as GATEWAY_DOMAIN
from gateway.errors import from_rpc_error
from service.errors import ERROR_DOMAIN, AgentError, Code, Reason
from service.providers.errors import Upstream, bad_payload, from_status, mid_stream_failure
from service.rpc.errors import to_grpc_status

OLLAMA = Upstream("Ollama", "http://box:11434", "fix the proxy key", "pull {model}")


def as_rpc_error(error: AgentError) -> grpc.aio.AioRpcError:
    status = to_grpc_status(error)
    return grpc.aio.AioRpcError(
        status.code,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(*status.trailing_metadata),
        details=status.details,
    )


@pytest.mark.parametrize(
    ("error", "http", "code", "retry_after", "reason"),
    [
        (
            from_status(OLLAMA, 401, "no", model="m"),
            503,
            "failed_precondition",
            None,
            "PROVIDER_CREDENTIALS_REJECTED",
        ),
        (
            from_status(OLLAMA, 403, "no", model="m", headers={"retry-after": "5"}),
            503,
            "failed_precondition",
            None,
            "PROVIDER_CREDENTIALS_REJECTED",
        ),
        (
            bad_payload(OLLAMA, "m", "not a JSON line"),
            502,
            "unavailable",
            None,
            "PROVIDER_INVALID_RESPONSE",
        ),
        (
            from_status(OLLAMA, 418, "teapot", model="m"),
            502,
            "unavailable",
            None,
            "PROVIDER_INVALID_RESPONSE",
        ),
        (
            from_status(OLLAMA, 429, "slow down", model="m", headers={"retry-after": "40"}),
            429,
            "resource_exhausted",
            40.0,
            "PROVIDER_RATE_LIMITED",
        ),
        (
            from_status(OLLAMA, 503, "busy", model="m"),
            503,
            "unavailable",
            2.0,
            "PROVIDER_OVERLOADED",
        ),
        (mid_stream_failure(OLLAMA, "m", "boom"), 503, "unavailable", None, "PROVIDER_FAILED"),
        # A client's own failed precondition (no reason) is the client's: 400, never 500.
        (
            AgentError("not now", code=Code.FAILED_PRECONDITION),
            400,
            "failed_precondition",
            None,
            None,
        ),
        (AgentError("bug", code=Code.INTERNAL), 500, "internal", None, None),
    ],
    ids=["401", "403", "bad-json", "418", "429", "503", "mid-stream", "precondition", "internal"],
)
def test_status_by_code_and_reason(
    error: AgentError, http: int, code: str, retry_after: float | None, reason: str | None
) -> None:
    mapped = from_rpc_error(as_rpc_error(error))
    assert (mapped.status, mapped.code, mapped.retry_after_s, mapped.reason) == (
        http,
        code,
        retry_after,
        reason,
    )
    body = mapped.body()
    assert body["code"] == code and body["detail"] == error.message
    assert body.get("reason") == reason
    assert ("Retry-After" in mapped.headers()) == (retry_after is not None)
    event = mapped.event_data()
    assert event["status"] == http and event["code"] == code
    assert event.get("reason") == reason and event.get("retry_after_s") == retry_after


def test_credentials_message_names_the_provider() -> None:
    mapped = from_rpc_error(as_rpc_error(from_status(OLLAMA, 401, "bad key", model="m")))
    assert "Ollama at http://box:11434" in mapped.detail and "credentials" in mapped.detail


def test_error_info_carries_domain_and_metadata() -> None:
    status = to_grpc_status(from_status(OLLAMA, 401, "no", model="m"))
    (_key, raw), *_ = status.trailing_metadata
    details = status_pb2.Status.FromString(raw).details
    info = error_details_pb2.ErrorInfo()
    assert details[0].Unpack(info)
    assert info.domain == ERROR_DOMAIN == GATEWAY_DOMAIN
    assert info.reason == Reason.PROVIDER_CREDENTIALS_REJECTED
    assert dict(info.metadata) == {"provider": "ollama", "url": "http://box:11434", "model": "m"}


def test_a_reason_of_another_domain_is_not_ours() -> None:
    info = error_details_pb2.ErrorInfo(reason="PROVIDER_INVALID_RESPONSE", domain="example.com")
    packed = any_pb2.Any()
    packed.Pack(info)
    raw = status_pb2.Status(code=14, message="x", details=[packed]).SerializeToString()
    error = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(("grpc-status-details-bin", raw)),
        details="x",
    )
    mapped = from_rpc_error(error)
    assert mapped.status == 503 and mapped.reason is None


def transport_error(details: str) -> grpc.aio.AioRpcError:
    """An UNAVAILABLE made by gRPC itself, not by the service: no details key."""
    return grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details
    )


@pytest.mark.parametrize(
    "details",
    [
        "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: refused",
        "connections to all backends failing; last error: ipv4:127.0.0.1:5: backend unhealthy",
    ],
)
def test_no_replica_to_call_is_unreachable_with_a_retry_hint(details: str) -> None:
    error = from_rpc_error(transport_error(details))
    assert error.status == 503
    assert error.detail.startswith("the agent service is unreachable: ")
    assert error.headers()["Retry-After"] == "1"


def test_a_connection_cut_during_the_call_is_lost_without_a_retry_hint() -> None:
    # The service may have done the work (stored the turn): no invitation to send it again.
    error = from_rpc_error(transport_error("Socket closed"))
    assert error.status == 503
    assert error.detail == "the connection to the agent service was lost: Socket closed"
    assert "Retry-After" not in error.headers()


def test_the_services_own_unavailable_is_passed_on_as_it_is() -> None:
    error = from_rpc_error(as_rpc_error(AgentError("shutting down", code=Code.UNAVAILABLE)))
    assert error.status == 503 and error.detail == "shutting down"
    assert "Retry-After" not in error.headers()
