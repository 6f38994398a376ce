"""The store's health as a ``grpc.health.v1`` entry of its own, kept current by a ping.

Readiness must see a database outage even when nothing else touches the
store: a probe without a token never reaches GetStatus, and a service with
no traffic would otherwise notice neither the outage nor its end. The
service's overall health ("") stays SERVING through an outage: calls that do
not need the store (queue status, cancel) still work, and a client-side load
balancer must not take away a replica for a database every replica shares.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from grpc_health.v1 import health, health_pb2

from service.store.base import ConversationStore

log = logging.getLogger(__name__)

# The health entry: ``grpc.health.v1.Health/Check`` with this service name.
STORE_HEALTH_SERVICE = "agent.v1.AgentService/store"
# A ping is one "SELECT 1": cheap enough to notice an outage (and its end) within seconds.
DEFAULT_INTERVAL_S = 2.0

Publish = Callable[[bool], Awaitable[None]]


class StoreWatch:
    """Pings the store every ``interval_s`` and publishes each change of its answer."""

    def __init__(
        self, store: ConversationStore, publish: Publish, interval_s: float = DEFAULT_INTERVAL_S
    ) -> None:
        self._store = store
        self._publish = publish
        self._interval_s = interval_s
        self.healthy: bool | None = None  # None until the first ping

    async def check(self) -> bool:
        """One ping; publishes the answer when it differs from the last one."""
        healthy = await self._store.ping()
        if healthy != self.healthy:
            self.healthy = healthy
            await self._publish(healthy)
        return healthy

    async def run(self) -> None:
        """Check forever (cancel to stop); the store logs the outage and its end itself."""
        while True:
            try:
                await self.check()
            except Exception:  # a ping must never end the watch
                log.exception("store health check failed unexpectedly")
            await asyncio.sleep(self._interval_s)


def publish_to(servicer: health.aio.HealthServicer) -> Publish:
    """Publish the store's health as the ``STORE_HEALTH_SERVICE`` entry of ``servicer``."""

    async def publish(healthy: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING
        if not healthy:
            status = health_pb2.HealthCheckResponse.NOT_SERVING
        await servicer.set(STORE_HEALTH_SERVICE, status)

    return publish
