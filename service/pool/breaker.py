"""A circuit breaker per host: chat failures count toward a host's health, not only probes.

A host can answer every health check and still fail every chat (a broken
model runner behind a healthy HTTP server). The health checks alone keep such
a host in the pool, so half the requests fail while another host sits idle.

States of one host (``closed`` is the normal one)::

    closed ──(failures in a row ≥ trip_after)──▶ open (out of the pool)
    open ──(a health check passes, open_s after tripping)──▶ half-open (back in)
    half-open ──(a chat succeeds)──▶ closed
    half-open ──(a chat fails)──▶ open

Only failures that are the host's fault count (see ``counts_against_host``):
the request was fine, the host could not answer it. The breaker tells the
scheduler through ``report_host``, like the health checks, so a host that is
out gets no new work, not even a conversation's follow-up turn, and its last
error shows in the status.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from service.errors import AgentError, Code, ProviderError
from service.scheduler.interface import RequestScheduler

log = logging.getLogger(__name__)


def counts_against_host(exc: BaseException) -> bool:
    """Whether a chat's failure is the host's fault: unavailable, broken, or garbage.

    A refused request (bad model name, bad input, rate limits) says nothing about
    the host, and a timeout is left to the health checks (a slow answer may be a
    long prompt).
    """
    return isinstance(exc, ProviderError) and exc.code is Code.UNAVAILABLE


@dataclass(slots=True)
class _HostState:
    failures: int = 0  # chats failed in a row
    opened_at: float | None = None  # clock time it tripped; None while closed or half-open
    half_open: bool = False


class CircuitBreaker:
    """Chat outcomes of one provider's hosts; a host that keeps failing is taken out.

    ``clock`` (monotonic seconds) is injected by tests.
    """

    def __init__(
        self,
        scheduler: RequestScheduler,
        provider: str,
        *,
        trip_after: int,
        open_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if trip_after < 1 or open_s < 0:
            raise ValueError("trip_after must be at least 1 and open_s not negative")
        self._scheduler = scheduler
        self._provider = provider
        self._trip_after = trip_after
        self._open_s = open_s
        self._clock = clock
        self._hosts: dict[str, _HostState] = {}

    def is_open(self, host: str) -> bool:
        """Whether the breaker holds ``host`` out of the pool."""
        state = self._hosts.get(host)
        return state is not None and state.opened_at is not None

    def succeeded(self, host: str) -> None:
        """A chat on ``host`` ended well (or failed through no fault of the host)."""
        state = self._hosts.get(host)
        if state is None:
            return
        if state.half_open:
            log.warning("%s host %s answers chats again", self._provider, host)
        if state.opened_at is None:  # an open host stays out until a health check passes
            del self._hosts[host]

    async def failed(self, host: str, exc: BaseException) -> None:
        """A chat on ``host`` ended with ``exc``; only the host's faults count."""
        if not counts_against_host(exc):
            self.succeeded(host)
            return
        error = exc.message if isinstance(exc, AgentError) else repr(exc)
        if len(self._scheduler.hosts(self._provider)) < 2:
            # A lone host is never taken out: no other host could take its turns, and
            # every request would be refused until a health check let it back.
            await self._report(host, up=None, error=error)
            return
        state = self._hosts.setdefault(host, _HostState())
        state.failures += 1
        if state.opened_at is not None:
            await self._report(host, up=False, error=error)
            return
        if state.half_open or state.failures >= self._trip_after:
            state.opened_at, state.half_open = self._clock(), False
            summary = f"{state.failures} chat(s) failed in a row; the last: {error}"
            log.warning("%s host %s is out of the pool: %s", self._provider, host, summary)
            await self._report(host, up=False, error=summary)
        else:
            await self._report(host, up=None, error=error)

    def retry_elsewhere(self, host: str, model: str, exc: BaseException) -> bool:
        """Whether a call that failed on ``host`` with ``exc`` may run once on another host.

        Only a failure that is the host's fault, and only when another host that
        is up serves ``model`` (a lone host would just fail it a second time).
        """
        return counts_against_host(exc) and any(
            h.up and h.name != host and h.serves(model)
            for h in self._scheduler.hosts(self._provider)
        )

    def health_check_passed(self, host: str) -> bool:
        """A health check of ``host`` passed: may it be marked up?

        A host the breaker holds out comes back (half-open) only once ``open_s``
        have passed since it tripped; its next chat then decides.
        """
        state = self._hosts.get(host)
        if state is None or state.opened_at is None:
            return True
        if self._clock() - state.opened_at < self._open_s:
            return False
        state.opened_at, state.half_open, state.failures = None, True, 0
        log.warning("%s host %s is back in the pool on trial", self._provider, host)
        return True

    async def _report(self, host: str, *, up: bool | None, error: str) -> None:
        """Tell the scheduler; ``up`` None keeps the host's state and records only the error."""
        current = next((h for h in self._scheduler.hosts(self._provider) if h.name == host), None)
        if current is None:
            return
        await self._scheduler.report_host(
            self._provider, host, up=current.up if up is None else up, error=error
        )
