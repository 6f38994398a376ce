"""``/health/live`` and ``/health/ready``: the probes of an orchestrator or load balancer.

Live is the gateway process itself. Ready is what traffic needs: the gateway
is not draining, the service reports SERVING over ``grpc.health.v1``, its
store answers (the service's ``agent.v1.AgentService/store`` health entry,
kept current by a ping; a database outage is "store unavailable") and its
default provider is reachable (GetStatus says ``ok``). GetStatus asks for a
caller: the probe's own ``Authorization`` is passed on; a service that refuses
it (auth on, a probe without a token) leaves the answer to gRPC health alone.
The answer is kept for a second, so frequent probes cost one check.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import grpc
from agent.v1 import agent_pb2 as pb
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from grpc_health.v1 import health_pb2

from gateway import models
from gateway.drain import Drain, shutting_down
from gateway.errors import from_rpc_error

router = APIRouter()

CACHE_S = 1.0
_CHECK_TIMEOUT_S = 2.0
_AUTH_CODES = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
# ErrorInfo reason of a database outage (service/errors.py Reason.STORE_UNAVAILABLE).
STORE_UNAVAILABLE = "STORE_UNAVAILABLE"
# The service's health entry for its store (service/store/watch.py; the gateway never
# imports the service, so the name is repeated here).
STORE_HEALTH_SERVICE = "agent.v1.AgentService/store"


@dataclass(slots=True)
class Readiness:
    """The last readiness answer and when it was found."""

    body: dict[str, Any] | None = None
    status: int = 503
    at: float = 0.0


def _unready(detail: str) -> tuple[dict[str, Any], int]:
    return {"status": "unavailable", "detail": detail, "code": "unavailable"}, 503


def _store_unready() -> tuple[dict[str, Any], int]:
    body, status = _unready("store unavailable: the service cannot reach its database")
    return {**body, "reason": STORE_UNAVAILABLE}, status


async def _store_serving(upstream: Any) -> bool:
    """False when the service's store health entry says NOT_SERVING (a database outage).

    No entry (a service that has not pinged its store yet, or an older one) is no answer.
    """
    try:
        reply = await upstream.health.Check(
            health_pb2.HealthCheckRequest(service=STORE_HEALTH_SERVICE), timeout=_CHECK_TIMEOUT_S
        )
    except grpc.aio.AioRpcError:
        return True  # NOT_FOUND, or a failure the overall check has just not seen: GetStatus tells
    return bool(reply.status != health_pb2.HealthCheckResponse.NOT_SERVING)


async def _check(request: Request) -> tuple[dict[str, Any], int]:
    upstream = request.app.state.upstream
    auth = request.headers.get("authorization")
    metadata = (("authorization", auth),) if auth else ()
    try:
        reply = await upstream.health.Check(
            health_pb2.HealthCheckRequest(), timeout=_CHECK_TIMEOUT_S
        )
    except grpc.aio.AioRpcError as exc:
        return _unready(f"the agent service is unreachable: {exc.details() or exc.code().name}")
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        return _unready(f"the agent service reports {name}")
    if not await _store_serving(upstream):
        return _store_unready()
    try:
        status = await upstream.stub.GetStatus(
            pb.GetStatusRequest(), metadata=metadata, timeout=_CHECK_TIMEOUT_S
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() in _AUTH_CODES:
            return {"status": "ok", "service": "serving", "provider": "unchecked"}, 200
        if from_rpc_error(exc).reason == STORE_UNAVAILABLE:
            return _store_unready()
        return _unready(f"the agent service's status failed: {exc.details() or exc.code().name}")
    if status.status != "ok":
        return _unready(f"the default provider {status.provider} is unreachable")
    return {"status": "ok", "service": "serving", "provider": status.provider}, 200


@router.get(
    "/health/live", tags=["status"], operation_id="Live", response_model=models.ProbeResponse
)
async def live() -> Response:
    """200 while the gateway process runs (no auth)."""
    return JSONResponse({"status": "ok"})


@router.get(
    "/health/ready",
    tags=["status"],
    operation_id="Ready",
    response_model=models.ProbeResponse,
    responses={503: {"model": models.ErrorBody, "description": "Not ready for traffic"}},
)
async def ready(request: Request) -> Response:
    """200 when the service is SERVING and its default provider reachable (no auth)."""
    drain: Drain = request.app.state.drain
    if drain.draining:
        error = shutting_down()
        return JSONResponse(error.body(), error.status, headers=error.headers())
    cached: Readiness = request.app.state.readiness
    now = time.monotonic()
    if cached.body is None or now - cached.at >= CACHE_S:
        cached.body, cached.status = await _check(request)
        cached.at = now
    return JSONResponse(cached.body, cached.status)
