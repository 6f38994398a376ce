"""The server interceptor: authentication and the call context for every AgentService RPC.

It wraps each method handler of ``agent.v1.AgentService`` so that, before the
handler runs, the bearer token is checked (UNAUTHENTICATED otherwise) and the
call's method, caller and request id are set in the contextvar of
``service.rpc.calls``. Handlers then only resolve which user a trusted caller
acts as. Health and reflection stay open, as they must for probes and grpcurl.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import grpc

from service.auth import Authenticator, Principal
from service.rpc.calls import Call, enter_call, request_id_from
from service.rpc.errors import Context, abort

_AUTHORIZATION = "authorization"
_REQUEST_ID = "x-request-id"

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Any]]


class CallInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates every call of the services under ``prefix`` and sets its call context."""

    def __init__(self, auth: Authenticator, *, prefix: str) -> None:
        self._auth = auth
        self._prefix = prefix

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Any:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or not method.startswith(self._prefix):
            return handler
        metadata = handler_call_details.invocation_metadata
        return self._wrap(
            handler,
            method,
            _metadata_value(metadata, _AUTHORIZATION),
            request_id_from(_metadata_value(metadata, _REQUEST_ID)),
        )

    def _wrap(
        self,
        handler: Any,
        method: str,
        authorization: str | None,
        request_id: str,
    ) -> Any:
        def begin() -> None:
            principal: Principal = self._auth.authenticate(authorization)
            enter_call(Call(method, principal, request_id))

        # grpc's stubs type handlers for the sync server; these are grpc.aio behaviours.
        codec: dict[str, Any] = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            unary: Any = handler.unary_unary

            async def unary_behavior(request: Any, context: Context) -> Any:
                try:
                    begin()
                except Exception as exc:
                    await abort(context, exc)
                return await unary(request, context)

            return grpc.unary_unary_rpc_method_handler(cast(Any, unary_behavior), **codec)
        if handler.unary_stream is not None:
            streaming: Any = handler.unary_stream
            if inspect.isasyncgenfunction(streaming):

                async def generator_behavior(request: Any, context: Context) -> AsyncIterator[Any]:
                    try:
                        begin()
                    except Exception as exc:
                        await abort(context, exc)
                    async for response in streaming(request, context):
                        yield response

                return grpc.unary_stream_rpc_method_handler(cast(Any, generator_behavior), **codec)

            async def writer_behavior(request: Any, context: Context) -> None:
                try:
                    begin()
                except Exception as exc:
                    await abort(context, exc)
                await streaming(request, context)

            return grpc.unary_stream_rpc_method_handler(cast(Any, writer_behavior), **codec)
        raise TypeError(f"{method}: client-streaming handlers are not supported here")


def _metadata_value(metadata: Any, key: str) -> str | None:
    for k, value in metadata or ():
        if k == key:
            return value if isinstance(value, str) else bytes(value).decode("latin-1")
    return None
