"""Running a turn's model calls on the host its ticket holds, and moving it when that host fails.

When a host fails under a running turn (the health checks mark it down, the
connection is refused, or it drops the connection) the turn's fate depends on
what the client has seen: a turn that has sent nothing yet goes back to the
front of the queue and runs on another host; one that has streamed text ends
with UNAVAILABLE and a retry hint (the chat service stores its partial answer
as failed). A connection refused during a call marks the host down at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from service.errors import ProviderError, ServiceUnavailable, UpstreamLost
from service.pool.breaker import CircuitBreaker
from service.providers.base import Provider
from service.scheduler.interface import Admission, Grant, RequestScheduler

log = logging.getLogger(__name__)


class HostPool:
    """The bridges of one provider's hosts (one per host, by name) and failover between them."""

    def __init__(
        self,
        scheduler: RequestScheduler,
        provider: str,
        bridges: Mapping[str, Provider],
        *,
        retry_after_s: float,
        max_attempts: int = 3,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        if not bridges:
            raise ValueError("a pool needs at least one host")
        self._scheduler = scheduler
        self._provider = provider
        self._bridges = dict(bridges)
        self._retry_after_s = retry_after_s
        self._max_attempts = max_attempts
        self._breaker = breaker

    def bridge(self, grant: Grant) -> Provider:
        return self._bridges[grant.backend]

    async def run(
        self,
        admission: Admission,
        grant: Grant,
        call: Callable[[Provider], Awaitable[None]],
        *,
        sent: Callable[[], bool],
        deadline: float,
    ) -> Grant:
        """Run ``call`` on the grant's host; on a host failure run it again elsewhere.

        ``sent`` says whether the client has seen any of the answer yet. ``deadline``
        (event-loop time) bounds the waits for another host. Returns the grant the
        call finally ran under (a new one after a move).
        """
        loop = asyncio.get_running_loop()
        while True:
            host = grant.backend
            attempt = asyncio.ensure_future(call(self._bridges[host]))
            lost = asyncio.ensure_future(grant.signal.host_lost())
            try:
                await asyncio.wait({attempt, lost}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                attempt.cancel()
                lost.cancel()
                await asyncio.gather(attempt, lost, return_exceptions=True)
                raise
            lost.cancel()
            if attempt.done():
                try:
                    attempt.result()
                    if self._breaker is not None:
                        self._breaker.succeeded(host)
                    return grant
                except UpstreamLost as exc:
                    if self._breaker is not None:
                        await self._breaker.failed(host, exc)
                    if exc.refused:
                        await self._scheduler.report_host(
                            self._provider, host, up=False, error=exc.message
                        )
                    if sent() or len(grant.tried) + 1 >= self._max_attempts:
                        if exc.retry_after_s is None:
                            exc.retry_after_s = self._retry_after_s
                        raise
                    log.info("request %s: %s; trying another host", grant.request_id, exc.message)
                except ProviderError as exc:
                    if self._breaker is not None:
                        await self._breaker.failed(host, exc)
                    # A host that failed before any output: tried once more, on another host.
                    retry = self._breaker is not None and self._breaker.retry_elsewhere(
                        host, admission.model, exc
                    )
                    if sent() or grant.tried or not retry:
                        raise
                    log.info("request %s: %s; trying another host", grant.request_id, exc.message)
            else:  # the host went down under the call
                attempt.cancel()
                await asyncio.gather(attempt, return_exceptions=True)
                if sent():
                    raise ServiceUnavailable(
                        f"the {self._provider} host {host} went down while this answer was "
                        "streaming; retry the request",
                        retry_after_s=self._retry_after_s,
                    )
                log.info("request %s: host %s went down; trying another", grant.request_id, host)
            await self._scheduler.put_back(grant)
            grant = await self._scheduler.acquire(admission, max(deadline - loop.time(), 0.0))
