"""Request records: who asked, for which provider, what state it is in, how long it is kept."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from service.errors import AgentError, Code, NotFound

State = Literal["queued", "running", "completed", "cancelled", "failed"]
Outcome = Literal["completed", "failed", "cancelled"]

OUTCOMES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})

_log = logging.getLogger(__name__)


class Ticket:
    """One chat request's handle and record: it follows the request from submit to its end.

    States: queued → running → completed | cancelled | failed (a queued request can
    also end directly as cancelled or failed). ``holds_slot`` is separate from the
    state: a running request cancelled by its owner reads ``cancelled`` at once but
    keeps its slot until its worker calls ``Scheduler.finish``.
    """

    __slots__ = (
        "_callbacks",
        "_error",
        "_left",
        "_state",
        "_waiter",
        "backend",
        "closed",
        "conversation_id",
        "enqueued_at",
        "enqueued_mono",
        "finished_at",
        "finished_mono",
        "holds_slot",
        "host_lost",
        "model",
        "on_host_lost",
        "priority",
        "provider",
        "request_id",
        "seq",
        "started_at",
        "started_mono",
        "tried",
        "user_id",
    )

    def __init__(
        self,
        *,
        request_id: str,
        user_id: str,
        provider: str,
        priority: int,
        seq: int,
        enqueued_mono: float,
        enqueued_at: float,
        conversation_id: str | None = None,
        model: str = "",
    ) -> None:
        self.request_id = request_id
        self.user_id = user_id
        self.provider = provider
        self.priority = priority
        self.seq = seq
        # Turns of one conversation run one at a time, in submission order.
        self.conversation_id = conversation_id
        self.model = model
        # *_mono come from the scheduler's clock (ordering, estimates, retention);
        # *_at are wall-clock epoch seconds, for people and APIs.
        self.enqueued_mono = enqueued_mono
        self.enqueued_at = enqueued_at
        self.started_mono: float | None = None
        self.started_at: float | None = None
        self.finished_mono: float | None = None
        self.finished_at: float | None = None
        self.holds_slot = False
        self.closed = False  # finish() has run
        # The host its slot is on ("" on a provider without a pool); the hosts it has
        # run on before (it was put back after one went down); whether its host has
        # gone down under it, and what the worker asked to be called then.
        self.backend = ""
        self.tried: tuple[str, ...] = ()
        self.host_lost = False
        self.on_host_lost: Callable[[], None] | None = None
        self._state: State = "queued"
        # Both go once the request has ended (None): the record is kept for
        # queue.retention_s, and what it holds is walked by every full collection.
        self._callbacks: list[Callable[[], None]] | None = []
        self._error: AgentError | None = None
        self._waiter: asyncio.Future[None] | None = None
        # Set when the request stops waiting; made only for a watcher that waits on it
        # (thousands of waiting requests would otherwise each hold an unused one).
        self._left: asyncio.Event | None = None

    def __repr__(self) -> str:
        return (
            f"Ticket({self.request_id!r}, user={self.user_id!r}, provider={self.provider!r}, "
            f"priority={self.priority}, state={self._state!r})"
        )

    @property
    def state(self) -> State:
        return self._state

    @property
    def awaiting_slot(self) -> bool:
        """A task is waiting in ``Scheduler.acquire`` for this request's slot."""
        return self._waiter is not None

    @property
    def cancelled(self) -> bool:
        return self._state == "cancelled"

    @property
    def group(self) -> str | None:
        """The dispatch queue keeps the requests of one group in submission order."""
        return self.conversation_id

    def add_cancel_callback(self, cb: Callable[[], None]) -> None:
        """Run ``cb`` once when this request is cancelled; at once if it already is.

        The worker running the request registers here the thing that closes its
        upstream connection, so an owner's cancel reaches the provider.
        """
        if self.cancelled:
            _run_callback(cb, self.request_id)
        elif self._callbacks is not None:  # ended otherwise, it will not be cancelled
            self._callbacks.append(cb)

    # Transitions below are driven by the Scheduler only.

    async def wait_left_queue(self, max_wait_s: float) -> None:
        """Return when this request stops waiting, or after ``max_wait_s`` seconds."""
        if self._state != "queued":
            return
        if self._left is None:
            self._left = asyncio.Event()
        left = self._left
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max_wait_s):
                await left.wait()

    def _start(self, mono: float, wall: float) -> None:
        if self._left is not None:
            self._left.set()
        self._state = "running"
        self.started_mono, self.started_at = mono, wall
        self.holds_slot = True

    def _put_back(self) -> None:
        """Waiting again after its host went down: it gives up the slot it had there."""
        self._left = None
        self._state = "queued"
        self.holds_slot = False
        if self.backend:
            self.tried = (*self.tried, self.backend)
        self.backend = ""
        self.host_lost = False

    def _lose_host(self) -> None:
        self.host_lost = True
        cb = self.on_host_lost
        if cb is not None:
            _run_callback(cb, self.request_id)

    def _end(self, state: Outcome, mono: float, wall: float, error: AgentError | None) -> None:
        if self._left is not None:
            self._left.set()  # its waiters hold it; the record lets it go
            self._left = None
        self._state = state
        self.finished_mono, self.finished_at = mono, wall
        self._error = error
        callbacks, self._callbacks = self._callbacks, None
        if state == "cancelled" and callbacks:
            for cb in callbacks:
                _run_callback(cb, self.request_id)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _failure(self) -> AgentError | None:
        """A fresh copy of the error that ended this request, to raise to its waiter."""
        return None if self._error is None else self._error.copy()

    def failure(self) -> AgentError | None:
        """The error this request ended with (a fresh copy), or None."""
        return self._failure()


def _run_callback(cb: Callable[[], None], request_id: str) -> None:
    # A failing callback must not break the scheduler's bookkeeping or the other callbacks.
    try:
        cb()
    except Exception:
        _log.exception("cancel callback of request %s failed", request_id)


@dataclass(frozen=True)
class RequestInfo:
    """A snapshot of one request, as status and cancel report it."""

    request_id: str
    user_id: str
    provider: str
    priority: int
    state: State
    position: int  # requests ahead of it; -1 when it is not waiting
    estimated_wait_s: float  # 0.0 when it is not waiting
    enqueued_at: float | None
    started_at: float | None
    finished_at: float | None
    model: str = ""
    backend: str = ""  # the host it runs or ran on, when its provider has a pool
    conversation_id: str | None = None
    error: AgentError | None = None  # what it failed or was cancelled with (raise a copy)
    owner: str = ""  # the replica running it (a shared engine; "" in process)


class Registry:
    """Every request by its user and id, each kept for ``retention_s`` after it ends.

    Request ids live in their user's namespace: a client may choose its own id,
    and another user's id behaves exactly like an unused one (no existence
    oracle across users, no squatting).
    """

    def __init__(self, retention_s: float) -> None:
        self._retention_s = retention_s
        self._tickets: dict[tuple[str, str], Ticket] = {}
        # Requests end in clock order, so expiry is a FIFO: pruning pops from the left.
        self._expiry: deque[tuple[float, Ticket]] = deque()

    def __len__(self) -> int:
        return len(self._tickets)

    def add(self, ticket: Ticket) -> None:
        key = (ticket.user_id, ticket.request_id)
        if key in self._tickets:
            raise AgentError(
                f"request_id {ticket.request_id!r} is already in use", code=Code.ALREADY_EXISTS
            )
        self._tickets[key] = ticket

    def find(self, request_id: str, user_id: str, now: float) -> Ticket | None:
        """The caller's own request, or None (unknown, expired, or another user's id)."""
        ticket = self._tickets.get((user_id, request_id))
        if ticket is None or (
            ticket.finished_mono is not None and ticket.finished_mono + self._retention_s <= now
        ):
            return None
        return ticket

    def lookup(self, request_id: str, user_id: str, now: float) -> Ticket:
        """The caller's own request; anything else reads as absent, with one message for all."""
        ticket = self.find(request_id, user_id, now)
        if ticket is None:
            raise NotFound(f"no request with id {request_id!r}")
        return ticket

    def all(self) -> list[Ticket]:
        """Every known request (waiting, running, or ended within retention)."""
        return list(self._tickets.values())

    def ended(self, ticket: Ticket, now: float) -> None:
        """Start the retention period of a request that has just ended."""
        self._expiry.append((now, ticket))

    def prune(self, now: float) -> None:
        horizon = now - self._retention_s
        while self._expiry and self._expiry[0][0] <= horizon:
            _, ticket = self._expiry.popleft()
            key = (ticket.user_id, ticket.request_id)
            if self._tickets.get(key) is ticket:
                del self._tickets[key]
