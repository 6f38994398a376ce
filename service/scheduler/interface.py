"""The scheduler as the rest of the service sees it: one async port, records and signals.

Everything that owns or inspects accepted requests (the chat turn, the RPC
handlers, the stream registry, the host pool's health checks and failover,
shutdown, metrics) goes through ``RequestScheduler`` and nothing else. Two
adapters fill it and pass one contract suite (``tests/scheduler/contract``):

- ``service.scheduler.memory.MemoryScheduler``: the in-process engine (the
  embedded default);
- ``service.scheduler.postgres.PostgresScheduler``: the queue kept in
  PostgreSQL, shared by several service replicas (DESIGN §9).

Callers hold frozen records (``Admission``, ``Grant``, ``RequestInfo``) and
one signal per granted request (``LeaseSignal``), never another layer's
mutable objects. A request's life::

    admission = await scheduler.submit(spec)          # refused: an AgentError
    grant = await scheduler.acquire(admission, timeout=...)   # a slot, under a lease
    ... run the model call; stop it when grant.signal fires ...
    await scheduler.release(grant)                    # the slot goes to the next request
    ... store the turn ...                            # the conversation is still held
    await scheduler.finish(admission.request_id, "completed")  # its conversation is free

``finish`` also releases a slot still held, and ends a request that never got
one, so a ``finally`` needs only that call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from service.errors import AgentError
from service.scheduler.estimates import QueueStats
from service.scheduler.hosts import HostView
from service.scheduler.registry import Outcome, RequestInfo

log = logging.getLogger(__name__)

NO_SLOT = ""  # the provider of a request that needs no slot: it only waits for its conversation


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """What a caller asks the scheduler to admit.

    ``provider`` NO_SLOT: the request needs no provider slot (a slash command)
    and only waits for the earlier turns of its conversation.
    """

    request_id: str
    user_id: str
    provider: str
    priority: int = 5
    conversation_id: str | None = None
    model: str = ""
    max_active: int = 0  # the user's cap on waiting + running requests (0: none)
    # What another replica needs to run the request if this one goes away before it
    # starts (the turn's input, as JSON); kept with the request by a shared engine.
    payload: str = ""


@dataclass(frozen=True, slots=True)
class Admission:
    """An accepted request, as ``submit`` hands it back."""

    request_id: str
    user_id: str
    provider: str
    model: str
    priority: int
    conversation_id: str | None
    enqueued_at: float  # wall clock
    granted: bool = False  # a slot (or its conversation's turn) was free at submit: no wait


StopKind = Literal["cancelled", "fenced"]


class LeaseSignal:
    """Tells the holder of a grant to stop, or that its host went down under it.

    The scheduler fires it; the holder only waits on it. ``stopped`` fires once
    (its owner cancelled it, or the lease was taken away)
    and carries the error the request ends with; ``host_lost`` fires when the
    host of the slot went down, and is re-armed when the request is put back.
    """

    __slots__ = ("_callbacks", "_host", "_host_lost", "_stop", "error", "kind")

    def __init__(self) -> None:
        # The events are made only for a task that waits on them: most grants are
        # never stopped, and thousands of waiting requests each hold a signal.
        self._stop: asyncio.Event | None = None
        self._host: asyncio.Event | None = None
        self._host_lost = False
        self._callbacks: list[Callable[[], object]] = []
        self.kind: StopKind | None = None
        self.error: AgentError | None = None

    def on_stop(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Call ``callback`` when the stop signal fires (at once if it has); returns an undo."""
        if self.is_stopped:
            callback()
            return _nothing
        self._callbacks.append(callback)

        def undo() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return undo

    @property
    def is_stopped(self) -> bool:
        return self.kind is not None

    @property
    def is_host_lost(self) -> bool:
        return self._host_lost

    async def stopped(self) -> StopKind:
        if self.kind is None:
            if self._stop is None:
                self._stop = asyncio.Event()
            await self._stop.wait()
        assert self.kind is not None
        return self.kind

    async def host_lost(self) -> None:
        if not self._host_lost:
            if self._host is None:
                self._host = asyncio.Event()
            await self._host.wait()

    # scheduler side

    def stop(self, kind: StopKind, error: AgentError | None = None) -> None:
        if self.kind is None:
            self.kind, self.error = kind, error
            if self._stop is not None:
                self._stop.set()
            callbacks, self._callbacks = self._callbacks, []
            for callback in callbacks:
                callback()

    def lose_host(self) -> None:
        self._host_lost = True
        if self._host is not None:
            self._host.set()

    def rearm(self) -> None:
        """After a put-back the request waits again: a lost host is no longer news."""
        self._host_lost = False
        self._host = None


def _nothing() -> None:
    return None


@dataclass(frozen=True, slots=True)
class Grant:
    """A slot held under a lease: which host, which epoch, and the signal to stop."""

    request_id: str
    user_id: str
    provider: str
    backend: str  # the host ("" on a provider without a pool, or NO_SLOT)
    epoch: int  # fencing token: a newer grant of the same slot has a larger one
    waited_s: float  # seconds between submit and this grant
    tried: tuple[str, ...] = ()  # hosts it ran on before (put back after a failure)
    signal: LeaseSignal = field(default_factory=LeaseSignal, compare=False)


@dataclass(frozen=True, slots=True)
class Adopted:
    """A waiting request this replica took over from one that went away, with its payload."""

    admission: Admission
    payload: str


@dataclass(frozen=True, slots=True)
class Position:
    """Where a waiting request stands: requests ahead of it and the estimated wait."""

    ahead: int
    estimated_wait_s: float


class RequestScheduler(Protocol):
    """Admission, dispatch, leases, the request directory and reporting."""

    # admission and leases
    async def submit(self, spec: RequestSpec) -> Admission: ...

    async def acquire(self, admission: Admission, timeout: float | None = None) -> Grant: ...  # noqa: ASYNC109

    def positions(
        self, admission: Admission, min_interval_s: float = 0.2
    ) -> AsyncIterator[Position]: ...

    async def release(self, grant: Grant) -> None: ...

    async def put_back(self, grant: Grant) -> None: ...

    async def finish(
        self,
        request_id: str,
        user_id: str,
        outcome: Outcome,
        error: AgentError | None = None,
    ) -> None: ...

    # the request directory (owners and operators)
    async def cancel(
        self, request_id: str, user_id: str, error: AgentError | None = None
    ) -> RequestInfo: ...

    async def find(self, request_id: str, user_id: str) -> RequestInfo | None: ...

    async def status(self, request_id: str, user_id: str) -> RequestInfo: ...

    async def requests(self, user_id: str | None = None) -> list[RequestInfo]: ...

    # requests of replicas that went away (a shared engine only; in-process: none)
    async def adopt(self, limit: int = 50) -> list[Adopted]: ...

    async def replica_address(self, replica: str) -> str | None: ...

    # hosts of a pool
    async def report_host(
        self,
        provider: str,
        name: str,
        *,
        up: bool,
        error: str = "",
        loaded: Iterable[str] | None = None,
        models: Iterable[str] | None = None,
    ) -> None: ...

    def hosts(self, provider: str) -> Sequence[HostView]: ...

    # the service as a whole
    async def stats(self) -> QueueStats: ...

    async def begin_shutdown(self, message: str = "service is shutting down") -> None: ...

    async def drain(self, timeout: float) -> bool: ...  # noqa: ASYNC109


async def settle(step: Awaitable[None]) -> None:
    """Run a scheduler bookkeeping step to its end even if the caller is being cancelled.

    A turn's ``finally`` must give its slot and conversation back: when the turn is
    being cancelled, the step runs shielded so a second cancellation cannot cut it
    short. Otherwise it is awaited directly (no extra task on every turn). A step the
    scheduler cannot carry out now (its shared database is down) is logged, not
    raised: the turn's own outcome stands, and the request's lease runs out instead.
    """
    current = asyncio.current_task()
    try:
        if current is None or not current.cancelling():
            await step
            return
        task = asyncio.ensure_future(step)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            await task
            raise
    except AgentError as exc:
        log.warning("scheduler bookkeeping failed: %s", exc.message)
