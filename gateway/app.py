"""The FastAPI app factory; the gRPC channel lives in the lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response

from gateway.config import GatewaySettings, load_gateway_settings
from gateway.routes import Upstream, router, rpc_error_response

_CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_receive_message_length", 32 * 1024 * 1024),
]


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    """A gateway app; one long-lived gRPC channel per process."""
    settings = settings or GatewaySettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        channel = grpc.aio.insecure_channel(settings.grpc.address, options=_CHANNEL_OPTIONS)
        app.state.upstream = Upstream(
            channel, settings.api_server.request_timeout, settings.sse.keepalive_s
        )
        try:
            yield
        finally:
            await channel.close(grace=None)

    app = FastAPI(
        title="Multi-User AI Agent API",
        description=(
            "REST and Server-Sent-Events gateway of the agent service. "
            "Send `Authorization: Bearer <token>`. Errors are "
            '`{"detail": "...", "code": "<grpc code>"}`.'
        ),
        version="0.1.0",
        lifespan=lifespan,
    )
    if settings.api_server.enable_cors:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.api_server.cors_origins,
            allow_credentials="*" not in settings.api_server.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    app.include_router(router)

    @app.exception_handler(grpc.aio.AioRpcError)
    async def _rpc_error(request: Request, exc: grpc.aio.AioRpcError) -> Response:
        return rpc_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = jsonable_encoder(exc.errors())
        summary = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'body'}: {e.get('msg', '')}"
            for e in errors
        )
        return JSONResponse(
            {"detail": summary or "invalid request", "code": "invalid_argument", "errors": errors},
            status_code=422,
        )

    return app


def app_from_environment() -> FastAPI:
    """Factory for uvicorn workers: settings from AGENT_CONFIG and the environment."""
    return create_app(load_gateway_settings())
