"""Health checks of a provider's hosts: probe each one every interval, tell the scheduler.

A host that fails ``unhealthy_after`` probes in a row, or refuses a connection,
is marked down; one that passes a probe is marked up, unless the circuit
breaker (``service.pool.breaker``) still holds it out for failing chats. Each probe also reads
which models the host has loaded (and, for a host with no configured model
list, which models it has installed), because the host choice prefers a host
that has the model loaded and admission refuses a model no host serves.

The probe is a seam: ``Probe`` is any coroutine function from a host name to
its ``HostInventory``; the server passes the Ollama bridges' ``inventory``,
tests pass their own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection

from service.errors import AgentError, UpstreamLost
from service.pool.breaker import CircuitBreaker
from service.providers.base import HostInventory
from service.scheduler.interface import RequestScheduler

log = logging.getLogger(__name__)

# (host name, whether to list its installed models) → what it holds; raises when it fails.
Probe = Callable[[str, bool], Awaitable[HostInventory]]


class HealthMonitor:
    """Probes every host of one provider's pool and reports the results to the scheduler."""

    def __init__(
        self,
        scheduler: RequestScheduler,
        *,
        provider: str,
        probe: Probe,
        interval_s: float,
        unhealthy_after: int,
        learn_models: Collection[str] = (),
        breaker: CircuitBreaker | None = None,
    ) -> None:
        if interval_s <= 0 or unhealthy_after < 1:
            raise ValueError("interval_s must be positive and unhealthy_after at least 1")
        self._scheduler = scheduler
        self._provider = provider
        self._probe = probe
        self._interval_s = interval_s
        self._unhealthy_after = unhealthy_after
        self._learn = frozenset(learn_models)  # hosts whose model list comes from the host
        self._failures: dict[str, int] = {}
        self._breaker = breaker  # chat failures: a host it holds out stays down

    async def run(self) -> None:
        """Probe every interval (the first round one interval from now), until cancelled."""
        while True:
            await asyncio.sleep(self._interval_s)
            await self.check()

    async def check(self) -> None:
        """One round: every host probed at once, each result reported as it arrives."""
        hosts = [h.name for h in self._scheduler.hosts(self._provider)]
        await asyncio.gather(*(self._check_one(name) for name in hosts))

    async def _check_one(self, name: str) -> None:
        learn = name in self._learn
        try:
            inventory = await self._probe(name, learn)
        except AgentError as exc:
            await self._failed(
                name, exc.message, refused=isinstance(exc, UpstreamLost) and exc.refused
            )
            return
        except Exception as exc:  # a probe must never stop the health checks
            log.exception("health probe of %s failed unexpectedly", name)
            await self._failed(name, f"probe failed: {exc!r}", refused=False)
            return
        was_up = self._up(name)
        self._failures[name] = 0
        up = self._breaker is None or self._breaker.health_check_passed(name)
        await self._scheduler.report_host(
            self._provider,
            name,
            up=up,
            loaded=inventory.loaded,
            models=inventory.installed if learn else None,
        )
        if up and not was_up:
            log.warning("%s host %s is up again", self._provider, name)

    async def _failed(self, name: str, error: str, *, refused: bool) -> None:
        failures = self._failures[name] = self._failures.get(name, 0) + 1
        down = refused or failures >= self._unhealthy_after
        was_up = self._up(name)
        await self._scheduler.report_host(self._provider, name, up=not down and was_up, error=error)
        if down and was_up:
            log.warning("%s host %s is down: %s", self._provider, name, error)

    def _up(self, name: str) -> bool:
        return next(h.up for h in self._scheduler.hosts(self._provider) if h.name == name)
