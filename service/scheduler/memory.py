"""The in-process adapter of ``RequestScheduler``: the engine of ``scheduler.py`` behind the port.

The engine is synchronous and lives on one event loop; this adapter turns its
live ``Ticket``s into the port's frozen records and its cancel callbacks into
``LeaseSignal``s, so no caller ever holds a ticket. It is the embedded default
(``scheduler.backend: memory``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence

from service.errors import AgentError, NotFound, RequestCancelled
from service.scheduler.estimates import QueueStats
from service.scheduler.hosts import HostView, view
from service.scheduler.interface import (
    NO_SLOT,
    Admission,
    Adopted,
    Grant,
    LeaseSignal,
    Position,
    RequestSpec,
)
from service.scheduler.registry import Outcome, RequestInfo, Ticket
from service.scheduler.scheduler import COMMANDS, Scheduler


class MemoryScheduler:
    """``RequestScheduler`` over the in-process engine (one event loop, one replica)."""

    def __init__(self, engine: Scheduler) -> None:
        self.engine = engine
        self._signals: dict[tuple[str, str], LeaseSignal] = {}

    def _ticket(self, request_id: str, user_id: str) -> Ticket:
        ticket = self.engine.find(request_id, user_id)
        if ticket is None:
            raise NotFound(f"no request with id {request_id!r}")
        return ticket

    # -- admission and leases -----------------------------------------------------

    async def submit(self, spec: RequestSpec) -> Admission:
        ticket = self.engine.submit(
            user_id=spec.user_id,
            provider=spec.provider or COMMANDS,
            priority=spec.priority,
            request_id=spec.request_id,
            conversation_id=spec.conversation_id,
            model=spec.model,
            max_active=spec.max_active,
        )
        return Admission(
            request_id=ticket.request_id,
            user_id=ticket.user_id,
            provider=spec.provider,
            model=ticket.model,
            priority=ticket.priority,
            conversation_id=ticket.conversation_id,
            enqueued_at=ticket.enqueued_at,
            granted=ticket.state == "running",
        )

    async def acquire(self, admission: Admission, timeout: float | None = None) -> Grant:  # noqa: ASYNC109
        ticket = self._ticket(admission.request_id, admission.user_id)
        key = (ticket.user_id, ticket.request_id)
        signal = self._signals.get(key)
        if signal is None:
            signal = self._signals[key] = LeaseSignal()
        if not ticket.holds_slot:
            await self.engine.acquire(ticket, timeout)
        elif ticket.cancelled:
            # Granted at submit, cancelled by its owner before its run took the grant:
            # the slot goes to the next request now, not at the run's finish.
            self.engine.release_slot(ticket)
            raise ticket.failure() or RequestCancelled(
                f"request {ticket.request_id!r} was cancelled"
            )
        ticket.on_host_lost = signal.lose_host
        ticket.add_cancel_callback(lambda: signal.stop("cancelled", ticket.failure()))
        started = ticket.started_mono if ticket.started_mono is not None else ticket.enqueued_mono
        return Grant(
            request_id=ticket.request_id,
            user_id=ticket.user_id,
            provider=admission.provider,
            backend=ticket.backend,
            epoch=ticket.seq,
            waited_s=started - ticket.enqueued_mono,
            tried=ticket.tried,
            signal=signal,
        )

    async def positions(
        self, admission: Admission, min_interval_s: float = 0.2
    ) -> AsyncIterator[Position]:
        ticket = self._ticket(admission.request_id, admission.user_id)
        async for ahead, wait in self.engine.watch_position(ticket, min_interval_s):
            yield Position(ahead, wait)

    async def release(self, grant: Grant) -> None:
        ticket = self.engine.find(grant.request_id, grant.user_id)
        if ticket is not None:
            self.engine.release_slot(ticket)

    async def put_back(self, grant: Grant) -> None:
        ticket = self._ticket(grant.request_id, grant.user_id)
        grant.signal.rearm()
        self.engine.put_back(ticket)

    async def finish(
        self,
        request_id: str,
        user_id: str,
        outcome: Outcome,
        error: AgentError | None = None,
    ) -> None:
        self._signals.pop((user_id, request_id), None)
        ticket = self.engine.find(request_id, user_id)
        if ticket is not None:
            self.engine.finish(ticket, outcome, error)
            # The record stays for status look-ups (queue.retention_s); the lease signal,
            # with its two events, served only the run. Kept by every finished request,
            # it was a fifth of what each one left for the garbage collector to walk.
            ticket.on_host_lost = None

    # -- the request directory -------------------------------------------------------

    async def cancel(
        self, request_id: str, user_id: str, error: AgentError | None = None
    ) -> RequestInfo:
        return self.engine.cancel(request_id, user_id, error)

    async def find(self, request_id: str, user_id: str) -> RequestInfo | None:
        ticket = self.engine.find(request_id, user_id)
        return None if ticket is None else self.engine.status(request_id, user_id)

    async def status(self, request_id: str, user_id: str) -> RequestInfo:
        return self.engine.status(request_id, user_id)

    async def requests(self, user_id: str | None = None) -> list[RequestInfo]:
        return self.engine.requests(user_id)

    # -- replicas: one process has no other replica to take over from ------------------

    async def adopt(self, limit: int = 50) -> list[Adopted]:
        return []

    async def replica_address(self, replica: str) -> str | None:
        return None

    # -- hosts -------------------------------------------------------------------------

    async def report_host(
        self,
        provider: str,
        name: str,
        *,
        up: bool,
        error: str = "",
        loaded: Iterable[str] | None = None,
        models: Iterable[str] | None = None,
    ) -> None:
        self.engine.report_host(provider, name, up=up, error=error, loaded=loaded, models=models)

    def hosts(self, provider: str) -> Sequence[HostView]:
        return tuple(view(h) for h in self.engine.hosts(provider))

    # -- the service as a whole --------------------------------------------------------

    async def stats(self) -> QueueStats:
        return self.engine.stats()

    async def begin_shutdown(self, message: str = "service is shutting down") -> None:
        self.engine.begin_shutdown(message)

    async def drain(self, timeout: float) -> bool:  # noqa: ASYNC109
        return await self.engine.drain(timeout)


__all__ = ["NO_SLOT", "MemoryScheduler"]
