"""The one mapping from domain errors to gRPC status (with RetryInfo details)."""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar, cast

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from service.context import current_method
from service.errors import ERROR_DOMAIN, AgentError, Code, ProviderError

log = logging.getLogger(__name__)


def grpc_code(code: Code) -> grpc.StatusCode:
    """grpc.StatusCode of the same name."""
    return grpc.StatusCode[code.value]


def to_grpc_status(error: AgentError) -> grpc.Status:
    """A grpc.Status carrying the message and, when known, ErrorInfo and RetryInfo details."""
    code = grpc_code(error.code)
    status = status_pb2.Status(code=code.value[0], message=error.message)
    if error.reason is not None:
        info = error_details_pb2.ErrorInfo(
            reason=error.reason.value, domain=ERROR_DOMAIN, metadata=error.metadata
        )
        detail = any_pb2.Any()
        detail.Pack(info)
        status.details.append(detail)
    if error.retry_after_s is not None:
        seconds = max(0.0, error.retry_after_s)
        whole = math.floor(seconds)
        retry = error_details_pb2.RetryInfo(
            retry_delay=duration_pb2.Duration(
                seconds=whole, nanos=int((seconds - whole) * 1_000_000_000)
            )
        )
        detail = any_pb2.Any()
        detail.Pack(retry)
        status.details.append(detail)
    result: grpc.Status = rpc_status.to_status(status)
    return result


Context = grpc.aio.ServicerContext[Any, Any]


async def abort(
    context: Context, error: BaseException, extra: tuple[tuple[str, str], ...] = ()
) -> NoReturn:
    """End the RPC with the status for ``error``; unexpected errors become INTERNAL.

    ``extra`` is added to the status's trailing metadata.
    """
    if not isinstance(error, AgentError):
        log.error("unexpected error in %s", current_method(), exc_info=error)
        error = AgentError("internal error in the agent service; see its log", code=Code.INTERNAL)
    elif error.code is Code.INTERNAL:
        log.error("internal error: %s", error.message)
    elif isinstance(error, ProviderError):
        # The access line says only the code; an operator needs which provider, where, and why.
        meta = error.metadata
        log.warning(
            "provider %s failed (%s) at %s, model %s: %s",
            meta.get("provider", "?"),
            error.reason.value if error.reason is not None else error.code.value,
            meta.get("url", "?"),
            meta.get("model") or "?",
            error.message,
            extra={
                "reason": error.reason.value if error.reason is not None else "",
                "provider": meta.get("provider", ""),
                "url": meta.get("url", ""),
                "model": meta.get("model", ""),
            },
        )
    status = to_grpc_status(error)
    trailing = (*status.trailing_metadata, *extra)
    await context.abort(status.code, status.details, trailing_metadata=trailing)
    raise AssertionError("abort returned")  # it always raises


Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


def unary_errors(handler: Handler) -> Handler:
    """Turn any exception of a unary handler into its gRPC status."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: Context) -> Any:
        try:
            return await handler(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # every failure must become a status
            await abort(context, exc)

    return cast(Handler, wrapper)
