"""The server interceptor: what every AgentService RPC gets, whatever it does.

It wraps each method handler of ``agent.v1.AgentService`` so that, around
the handler:

- the bearer token is checked (UNAUTHENTICATED otherwise), and the call's
  method, caller and request id (``x-request-id``) are set in the contextvar
  of ``service.context``; handlers only resolve which user a trusted caller
  acts as;
- a server span continues the caller's trace (``traceparent``), when tracing is on;
- the call is counted and timed (``agent_grpc_server_*``) and gets one access
  log line: method, code, duration, user, request id.

Health and reflection stay open and unlogged, as probes and grpcurl need.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, cast

import grpc

from service.auth import Authenticator, Principal
from service.context import Call, enter_call, find_call, request_id_from
from service.observability.metrics import ServiceMetrics
from service.observability.tracing import Tracing
from service.rpc.errors import Context, abort

_AUTHORIZATION = "authorization"
_REQUEST_ID = "x-request-id"

access_log = logging.getLogger("service.access")

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Any]]


class CallInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates, traces, counts and logs every call of the services under ``prefix``."""

    def __init__(
        self,
        auth: Authenticator,
        *,
        prefix: str,
        metrics: ServiceMetrics | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self._auth = auth
        self._prefix = prefix
        self._metrics = metrics or ServiceMetrics()
        self._tracing = tracing or Tracing()

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Any:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or not method.startswith(self._prefix):
            return handler
        metadata = {
            k: v if isinstance(v, str) else bytes(v).decode("latin-1")
            for k, v in handler_call_details.invocation_metadata or ()
        }
        return self._wrap(handler, method, metadata)

    def _wrap(self, handler: Any, method: str, metadata: dict[str, str]) -> Any:
        short = method.rsplit("/", 1)[-1]
        tracing, metrics = self._tracing, self._metrics

        async def begin() -> None:
            # Awaited: a JWT whose key is not cached yet waits for the key-set fetch
            # without blocking the loop; every other token is checked synchronously.
            principal: Principal = await self._auth.identify(metadata.get(_AUTHORIZATION))
            # The one place a request id is minted in the service: every call has one,
            # and a chat turn without its own runs under it.
            request_id = request_id_from(metadata.get(_REQUEST_ID)) or uuid.uuid4().hex
            enter_call(Call(method, principal, request_id))

        async def around(context: Context, run: Callable[[], Awaitable[Any]]) -> Any:
            started = time.perf_counter()
            code = "UNKNOWN"
            try:
                with tracing.rpc(method, metadata):
                    try:
                        await begin()
                    except Exception as exc:
                        await abort(context, exc)
                    result = await run()
                code = _code_of(context, "OK")
                return result
            except grpc.aio.AbortError:
                code = _code_of(context, "UNKNOWN")
                raise
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            finally:
                elapsed = time.perf_counter() - started
                metrics.grpc_handled.labels(short, code).inc()
                metrics.grpc_seconds.labels(short).observe(elapsed)
                _log_access(short, code, elapsed)

        # grpc's stubs type handlers for the sync server; these are grpc.aio behaviours.
        codec: dict[str, Any] = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            unary: Any = handler.unary_unary

            async def unary_behavior(request: Any, context: Context) -> Any:
                return await around(context, lambda: unary(request, context))

            return grpc.unary_unary_rpc_method_handler(cast(Any, unary_behavior), **codec)
        if handler.unary_stream is not None:
            streaming: Any = handler.unary_stream
            if inspect.isasyncgenfunction(streaming):
                generator = streaming

                # Run as a writer, so the whole stream is inside the span, timing and log.
                async def streaming(request: Any, context: Context) -> None:
                    async for response in generator(request, context):
                        await context.write(response)

            async def writer_behavior(request: Any, context: Context) -> None:
                await around(context, lambda: streaming(request, context))

            return grpc.unary_stream_rpc_method_handler(cast(Any, writer_behavior), **codec)
        raise TypeError(f"{method}: client-streaming handlers are not supported here")


def _code_of(context: Context, default: str) -> str:
    """The status the handler set (abort or set_code), else ``default``."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    return default


def _log_access(method: str, code: str, elapsed_s: float) -> None:
    call = find_call()
    user = call.user_id if call is not None else ""
    access_log.info(
        "rpc %s %s %.2f ms user=%s",
        method,
        code,
        elapsed_s * 1e3,
        user or "-",
        extra={"code": code, "duration_ms": round(elapsed_s * 1e3, 3), "rpc": method},
    )
