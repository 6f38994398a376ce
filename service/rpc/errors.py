"""The one mapping from domain errors to gRPC status (with RetryInfo details)."""

from __future__ import annotations

import logging
import math

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from service.errors import AgentError, Code

log = logging.getLogger(__name__)


def grpc_code(code: Code) -> grpc.StatusCode:
    """grpc.StatusCode of the same name."""
    return grpc.StatusCode[code.value]


def to_grpc_status(error: AgentError) -> grpc.Status:
    """A grpc.Status carrying the message and, when known, a RetryInfo detail."""
    code = grpc_code(error.code)
    status = status_pb2.Status(code=code.value[0], message=error.message)
    if error.retry_after_s is not None:
        seconds = max(0.0, error.retry_after_s)
        whole = math.floor(seconds)
        info = error_details_pb2.RetryInfo(
            retry_delay=duration_pb2.Duration(
                seconds=whole, nanos=int((seconds - whole) * 1_000_000_000)
            )
        )
        detail = any_pb2.Any()
        detail.Pack(info)
        status.details.append(detail)
    result: grpc.Status = rpc_status.to_status(status)
    return result


async def abort(context: grpc.aio.ServicerContext[object, object], error: AgentError) -> None:
    """End the RPC with the error's status; never returns normally."""
    if error.code is Code.INTERNAL:
        log.error("internal error: %s", error.message)
    await context.abort_with_status(to_grpc_status(error))
