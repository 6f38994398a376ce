"""The asyncio face of the scheduler: admit, wait for a slot, finish, cancel, report."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence

from service.errors import (
    AgentError,
    DeadlineExceeded,
    InvalidRequest,
    LimitReached,
    RequestCancelled,
    ServiceUnavailable,
)
from service.scheduler.admission import WaitingCaps, check_request, retry_hint
from service.scheduler.estimates import QueueStats
from service.scheduler.hosts import Host, choose_host
from service.scheduler.lane import Lane, Pulse
from service.scheduler.queue import Spacing
from service.scheduler.registry import OUTCOMES, Outcome, Registry, RequestInfo, Ticket

COMMANDS = "command"  # slash commands: no slot, they wait only for their conversation
_AFFINITY_SIZE = 10_000  # conversations whose last host is remembered (the most recent ones)


class Scheduler:
    """Request registry, per-provider priority queues and slots, in one event loop.

    A worker's life with it::

        ticket = scheduler.submit(user_id=..., provider="ollama", priority=5)
        # acquire ends the ticket itself whenever it raises: nothing to clean up then
        await scheduler.acquire(ticket, timeout=queue_deadline)
        ticket.add_cancel_callback(close_upstream)
        try:
            ...  # call the provider
        except BaseException:
            scheduler.finish(ticket, "cancelled" if ticket.cancelled else "failed")
            raise
        scheduler.finish(ticket, "completed")

    Every state change is synchronous, so no two tasks ever see a half-made
    change; a freed slot is handed straight to the next waiter, which is why
    the number of running requests never exceeds a provider's slots.

    This is the one owner of every accepted request: one waiting for a slot,
    one waiting behind an earlier turn of its conversation (``conversation_id``:
    such a turn is not eligible for a slot until every earlier turn of the
    conversation has ended, and keeps its place by the order rule meanwhile),
    and one running. Caps, positions, estimates, status, cancel and statistics
    all read this one state. Commands (provider ``COMMANDS``) take no slot and
    practical slot limit and is left out of the provider statistics: they only
    wait for their conversation.

    A provider's slots live on its hosts (``hosts``; without it, one anonymous
    host with ``slots``). A free slot on a host that is up goes to the first
    eligible request whose model that host serves, on the host
    ``choose_host`` prefers; the ticket's ``backend`` names it. Health comes
    from outside (``report_host``): the scheduler only knows hosts with slots,
    model sets and an up/down flag.
    """

    def __init__(
        self,
        *,
        slots: Mapping[str, int],
        hosts: Mapping[str, Sequence[Host]] | None = None,
        max_pending: int = 100,
        max_pending_per_user: int = 10,
        aging_interval_s: float = 30.0,
        retention_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        default_service_s: float = 10.0,
        down_retry_s: float = 5.0,
    ) -> None:
        pools = dict(hosts or {})
        if not slots and not pools:
            raise ValueError("at least one provider needs slots")
        if any(n < 1 for n in slots.values()):
            raise ValueError("every provider needs at least one slot")
        if retention_s < 0:
            raise ValueError("retention_s must not be negative")
        for name, n in slots.items():
            pools.setdefault(name, [Host("", n)])
        started = wall_clock()
        for pool in pools.values():
            for host in pool:
                host.since = host.since or started
        # Each user's requests are spread over time across every provider (the order rule).
        spacing = Spacing(aging_interval_s)
        self._lanes = {
            name: Lane(
                name,
                pool,
                spacing=spacing,
                default_service_s=default_service_s,
            )
            for name, pool in pools.items()
        }
        # The host of each conversation's latest turn: its prompt cache holds the prefix.
        self._affinity: OrderedDict[str, str] = OrderedDict()
        self._down_retry_s = down_retry_s
        # Active (waiting or slot-holding) turns of each conversation, in submission order.
        self._conversations: dict[str, list[Ticket]] = {}  # a few turns each: lists
        self._caps = WaitingCaps(max_pending, max_pending_per_user)
        self._clock = clock
        self._wall_clock = wall_clock
        self._registry = Registry(retention_s)
        self._seq = itertools.count()
        self._active_by_user: dict[str, int] = {}  # waiting or holding a slot
        self._commands: set[Ticket] = set()  # commands waiting or running
        self._idle = Pulse()  # fires whenever a slot is released
        self._closing: str | None = None

    # -- admission -----------------------------------------------------------------

    def submit(
        self,
        *,
        user_id: str,
        provider: str,
        priority: int = 5,
        request_id: str | None = None,
        conversation_id: str | None = None,
        model: str = "",
        max_active: int = 0,
    ) -> Ticket:
        """Register a request and queue it for a slot of ``provider`` (taken at once if free).

        A request of a conversation that has an earlier turn waiting or running
        waits for it, in submission order, and counts as waiting meanwhile.
        ``max_active`` (0: no cap) bounds the user's waiting + running requests
        (``limits.max_active`` of the user's tier); over it is LimitReached.
        """
        now = self._clock()
        self._registry.prune(now)
        if self._closing is not None:
            raise ServiceUnavailable(self._closing)
        if not user_id:
            raise InvalidRequest("user_id must not be empty")
        check_request(priority=priority, request_id=request_id)
        if provider == COMMANDS:
            return self._submit_command(user_id, priority, request_id, conversation_id, now)
        lane = self._lanes.get(provider)
        if lane is None:
            known = ", ".join(sorted(self._lanes))
            raise InvalidRequest(f"unknown provider {provider!r}; configured: {known}")
        self._check_model(lane, model)
        active = self._active_by_user.get(user_id, 0)
        if max_active and active >= max_active:
            raise LimitReached(
                f"user {user_id!r} already has {active} requests waiting or running, the "
                f"limit (max_active={max_active}); retry when one has finished",
                retry_after_s=retry_hint(self._user_turnover(user_id, now)),
                limit="max_active",
            )
        turns = self._conversations.get(conversation_id) if conversation_id else None
        # A request that gets a slot at once never waits, so only queued ones count.
        waits = bool(turns) or not lane.can_start(model)
        ticket = self._register(
            user_id, provider, priority, request_id, conversation_id, model, now, waits
        )
        lane.queue.add(ticket)
        self._caps.enter(user_id)
        _bump(self._active_by_user, user_id, 1)
        self._dispatch(lane, now)
        return ticket

    def _submit_command(
        self,
        user_id: str,
        priority: int,
        request_id: str | None,
        conversation_id: str | None,
        now: float,
    ) -> Ticket:
        """A command needs no slot: it starts once no earlier turn of its conversation is active."""
        turns = self._conversations.get(conversation_id) if conversation_id else None
        waits = bool(turns)
        ticket = self._register(
            user_id, COMMANDS, priority, request_id, conversation_id, "", now, waits
        )
        self._commands.add(ticket)
        _bump(self._active_by_user, user_id, 1)
        if waits:
            self._caps.enter(user_id)  # waits, like any queued request
        else:
            ticket._start(now, self._wall_clock())
        return ticket

    def _register(
        self,
        user_id: str,
        provider: str,
        priority: int,
        request_id: str | None,
        conversation_id: str | None,
        model: str,
        now: float,
        waits: bool,
    ) -> Ticket:
        """A new request's record, known by its id and queued behind its conversation.

        A request that will wait is held to the waiting caps first (QueueFull).
        """
        if waits:
            self._caps.check(
                user_id,
                user_turnover_s=lambda: self._user_turnover(user_id, now),
                any_turnover_s=lambda: self._any_turnover(now),
            )
        ticket = Ticket(
            request_id=request_id or uuid.uuid4().hex,
            user_id=user_id,
            provider=provider,
            priority=priority,
            seq=next(self._seq),
            enqueued_mono=now,
            enqueued_at=self._wall_clock(),
            conversation_id=conversation_id,
            model=model,
        )
        self._registry.add(ticket)
        if conversation_id:
            self._conversations.setdefault(conversation_id, []).append(ticket)
        return ticket

    def _start_command(self, ticket: Ticket, now: float) -> None:
        self._caps.leave(ticket.user_id)
        ticket._start(now, self._wall_clock())
        ticket._wake()

    def _check_model(self, lane: Lane, model: str) -> None:
        """InvalidRequest for a model no host serves; UNAVAILABLE when none serving it is up."""
        if not model:
            return
        if not lane.serving(model, up_only=False):
            served = ", ".join(lane.served_models() or ())
            raise InvalidRequest(
                f"model {model!r} is not served by any {lane.provider} host here; "
                f"served models: {served}"
            )
        if not lane.serving(model):
            raise ServiceUnavailable(self._none_up(lane, model), retry_after_s=self._down_retry_s)

    def _none_up(self, lane: Lane, model: str) -> str:
        down = "; ".join(
            f"{h.name} ({h.last_error or 'down'})" for h in lane.serving(model, up_only=False)
        )
        return f"no {lane.provider} host that serves model {model!r} is up: {down}"

    def _user_turnover(self, user_id: str, now: float) -> float:
        """Roughly how soon the first of this user's waiting requests starts."""
        return min(
            (
                lane.estimate_wait(lane.position(t, now), now, t.model)
                for lane in self._lanes.values()
                for t in lane.queue.of_user(user_id)
            ),
            default=self._any_turnover(now),
        )

    def _any_turnover(self, now: float) -> float:
        """Roughly how soon some waiting request starts, freeing a place in the queue."""
        busy = [lane for lane in self._lanes.values() if len(lane.queue)]
        return min((lane.estimate_wait(0, now) for lane in busy), default=0.0)

    # -- waiting for a slot --------------------------------------------------------

    # The deadline is a parameter, not the caller's asyncio.timeout, because running
    # out of it has its own outcome (failed, DeadlineExceeded), unlike a cancellation.
    async def acquire(self, ticket: Ticket, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Wait until ``ticket`` holds a slot of its provider.

        Raises RequestCancelled if it is cancelled meanwhile, DeadlineExceeded after
        ``timeout`` seconds of waiting (the request then ends as failed) and
        ServiceUnavailable if shutdown begins. If the awaiting task is cancelled, the
        request ends as cancelled, any slot it got is released, and the
        CancelledError propagates.
        """
        if ticket.state == "queued":
            await self._wait_for_slot(ticket, timeout)
        if ticket.state == "running":
            return
        error = ticket._failure() or RequestCancelled(f"request {ticket.request_id} was cancelled")
        if ticket.holds_slot:  # cancelled by its owner after it got the slot
            self.finish(ticket, "cancelled")
        raise error

    async def _wait_for_slot(self, ticket: Ticket, deadline_s: float | None) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        ticket._waiter = waiter
        try:
            async with asyncio.timeout(deadline_s):
                await waiter
        except TimeoutError:
            # If the slot or another ending arrived together with the deadline, that wins.
            if ticket.state == "queued":
                waited = self._clock() - ticket.enqueued_mono
                self._leave_queue(
                    ticket,
                    "failed",
                    DeadlineExceeded(
                        f"request {ticket.request_id} waited {waited:.1f} s in the "
                        f"{ticket.provider} queue without getting a slot (queue-wait deadline)"
                    ),
                )
        except asyncio.CancelledError:
            if ticket.state == "queued":
                self._leave_queue(
                    ticket,
                    "cancelled",
                    RequestCancelled("the client went away while the request was queued"),
                )
            elif ticket.holds_slot:
                self.finish(ticket, "cancelled")
            raise
        finally:
            ticket._waiter = None

    def _eligible(self, ticket: Ticket) -> bool:
        """No earlier turn of its conversation is waiting or running."""
        if ticket.conversation_id is None:
            return True
        return self._conversations[ticket.conversation_id][0] is ticket

    def _dispatch(self, lane: Lane, now: float) -> None:
        """Hand free slots of ``lane`` to the eligible requests first in line.

        A request is eligible when no earlier turn of its conversation is active and
        a free host serves its model; among those hosts ``choose_host`` decides.
        """
        while self._closing is None and len(lane.queue):
            free = lane.free_hosts()
            if not free:
                break

            def startable(t: Ticket, free: list[Host] = free) -> bool:
                return self._eligible(t) and any(h.serves(t.model) for h in free)

            ticket = lane.queue.pop_next(startable)
            if ticket is None:
                break
            previous = (
                self._affinity.get(ticket.conversation_id) if ticket.conversation_id else None
            )
            host = choose_host(free, ticket.model, previous=previous, avoid=ticket.tried)
            assert host is not None  # startable() saw a free host that serves it
            self._caps.leave(ticket.user_id)
            ticket._start(now, self._wall_clock())
            lane.assign(ticket, host)
            if host.name and ticket.conversation_id:
                self._remember_host(ticket.conversation_id, host.name)
            lane.wait_time.add(now - ticket.enqueued_mono)
            ticket._wake()
        lane.notify()

    def _remember_host(self, conversation_id: str, host: str) -> None:
        self._affinity[conversation_id] = host
        self._affinity.move_to_end(conversation_id)
        if len(self._affinity) > _AFFINITY_SIZE:
            self._affinity.popitem(last=False)

    def _leave_queue(self, ticket: Ticket, outcome: Outcome, error: AgentError) -> None:
        """End a waiting request without it ever getting a slot."""
        now = self._clock()
        lane = self._lanes.get(ticket.provider)
        if lane is not None:
            lane.queue.remove(ticket)
        self._commands.discard(ticket)
        self._caps.leave(ticket.user_id)
        ticket.closed = True
        _bump(self._active_by_user, ticket.user_id, -1)
        ticket._end(outcome, now, self._wall_clock(), error)
        self._registry.ended(ticket, now)
        ticket._wake()
        if lane is not None:
            lane.notify()
        self._leave_conversation(ticket, now)
        self._idle.fire()

    def _leave_conversation(self, ticket: Ticket, now: float) -> None:
        """Drop an ended turn from its conversation; the next turn may now be eligible."""
        if ticket.conversation_id is None:
            return
        turns = self._conversations[ticket.conversation_id]
        was_first = turns[0] is ticket
        turns.remove(ticket)
        if not turns:
            del self._conversations[ticket.conversation_id]
        elif was_first and turns[0].state == "queued":
            if turns[0].provider == COMMANDS:
                self._start_command(turns[0], now)
            else:
                self._dispatch(self._lanes[turns[0].provider], now)

    # -- ending --------------------------------------------------------------------

    def release_slot(self, ticket: Ticket) -> None:
        """The model call is over: its slot goes to the next request at once.

        The request itself goes on (its turn is being stored) and still holds its
        conversation: the next turn of that conversation waits for ``finish``.
        """
        if not ticket.holds_slot:
            return
        if ticket.provider == COMMANDS:
            ticket.holds_slot = False
            return
        now = self._clock()
        lane = self._lanes[ticket.provider]
        lane.release(ticket)
        ticket.holds_slot = False
        if ticket.state != "cancelled" and ticket.started_mono is not None:
            # Cut-short requests would drag the estimate down, so only full runs count.
            lane.service_time.add(now - ticket.started_mono)
        self._dispatch(lane, now)
        self._idle.fire()

    def finish(self, ticket: Ticket, outcome: Outcome, error: AgentError | None = None) -> None:
        """End a request: release a slot it still holds, free its conversation, record it.

        Idempotent. A request its owner already cancelled stays cancelled whatever
        ``outcome`` says. Finishing a request that is still queued removes it.
        """
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {sorted(OUTCOMES)}, got {outcome!r}")
        if ticket.state == "queued":
            self._leave_queue(
                ticket,
                outcome,
                error
                or RequestCancelled(f"request {ticket.request_id} ended before it got a slot"),
            )
            return
        if ticket.closed:
            return
        ticket.closed = True
        if outcome != "completed" and ticket.holds_slot and ticket.provider != COMMANDS:
            # Cut short: its time says nothing about a full run.
            self._lanes[ticket.provider].release(ticket)
            ticket.holds_slot = False
        self.release_slot(ticket)
        now = self._clock()
        if ticket.state == "running":
            ticket._end(outcome, now, self._wall_clock(), error)
            self._registry.ended(ticket, now)
        _bump(self._active_by_user, ticket.user_id, -1)
        self._commands.discard(ticket)
        self._leave_conversation(ticket, now)
        if ticket.provider != COMMANDS:
            self._dispatch(self._lanes[ticket.provider], now)
        self._idle.fire()

    def put_back(self, ticket: Ticket) -> None:
        """A running request whose host failed before it sent anything waits again, first in line.

        It releases its slot and will prefer any other host. If no host that is
        up serves its model, it ends as failed with ServiceUnavailable instead
        (its worker's ``acquire`` raises it). A request cancelled meanwhile just
        gives up its slot.
        """
        if not ticket.holds_slot:
            return
        now = self._clock()
        lane = self._lanes[ticket.provider]
        if ticket.state != "running":
            self.finish(ticket, "cancelled")
            return
        lane.release(ticket)
        ticket._put_back()
        lane.queue.add_front(ticket)
        self._caps.enter(ticket.user_id)
        if self._closing is not None:
            self._leave_queue(ticket, "failed", ServiceUnavailable(self._closing))
        elif not lane.serving(ticket.model):
            self._leave_queue(
                ticket,
                "failed",
                ServiceUnavailable(
                    self._none_up(lane, ticket.model), retry_after_s=self._down_retry_s
                ),
            )
        self._dispatch(lane, now)
        self._idle.fire()

    def report_host(
        self,
        provider: str,
        name: str,
        *,
        up: bool,
        error: str = "",
        loaded: Iterable[str] | None = None,
        models: Iterable[str] | None = None,
    ) -> None:
        """What the health checks (or a failed call) found out about one host.

        A host going down gets no new work; each request running on it learns so
        (``Ticket.on_host_lost``) and its worker puts it back or ends it. Waiting
        requests that no host that is up serves any more end with ServiceUnavailable.
        A host coming up gets work at once. ``models`` replaces the models a host
        serves (learned from the host when none are configured).
        """
        lane = self._lanes[provider]
        host = lane.by_name[name]
        now = self._clock()
        if error:
            host.last_error = error
        if loaded is not None:
            host.loaded = frozenset(loaded)
        # Only a change of what a host takes can start or reorder anything: most reports
        # (every host, every interval) change nothing and wake no one.
        changed = up != host.up
        if models is not None and frozenset(models) != host.models:
            host.set_models(models)
            changed = True
        if up != host.up:
            host.up = up
            host.since = self._wall_clock()
        if not changed:
            return
        if not up:
            for ticket in list(host.running):
                if not ticket.host_lost:
                    ticket._lose_host()
            for ticket in list(lane.queue):
                if ticket.state == "queued" and not lane.serving(ticket.model):
                    error_ = ServiceUnavailable(
                        self._none_up(lane, ticket.model), retry_after_s=self._down_retry_s
                    )
                    self._leave_queue(ticket, "failed", error_)
        self._dispatch(lane, now)

    def hosts(self, provider: str) -> Sequence[Host]:
        """The hosts of a provider (read-only use: health checks, status)."""
        return tuple(self._lanes[provider].hosts)

    def cancel(self, request_id: str, user_id: str, error: AgentError | None = None) -> RequestInfo:
        """Cancel the caller's request: a waiting one leaves the queue, a running one is aborted.

        Raises NotFound for an unknown, expired or someone else's request. A request
        that has already ended is reported unchanged.
        """
        now = self._clock()
        self._registry.prune(now)
        ticket = self._registry.lookup(request_id, user_id, now)
        reason = error or RequestCancelled(f"request {request_id} was cancelled")
        if ticket.state == "queued":
            self._leave_queue(ticket, "cancelled", reason)
        elif ticket.state == "running":
            # The slot stays taken until the worker has closed the upstream and calls finish.
            ticket._end("cancelled", now, self._wall_clock(), reason)
            self._registry.ended(ticket, now)
        return self._info(ticket, now)

    def begin_shutdown(self, message: str = "service is shutting down") -> None:
        """Stop admitting work; every waiting request fails with ServiceUnavailable."""
        self._closing = message
        for lane in self._lanes.values():
            for ticket in list(lane.queue):
                if ticket.state == "queued":
                    self._leave_queue(ticket, "failed", ServiceUnavailable(message))
        for ticket in list(self._commands):
            if ticket.state == "queued":
                self._leave_queue(ticket, "failed", ServiceUnavailable(message))
        self._idle.fire()

    async def drain(self, timeout: float) -> bool:  # noqa: ASYNC109 (False on timeout, no raise)
        """Wait until no admitted request is left (True), or ``timeout`` seconds (False).

        A turn whose model call is over still counts until it is stored and finished.
        """
        try:
            async with asyncio.timeout(timeout):
                while self._active_by_user:
                    await self._idle.wait()
        except TimeoutError:
            return False
        return True

    # -- reporting -----------------------------------------------------------------

    def find(self, request_id: str, user_id: str) -> Ticket | None:
        """The caller's own request, if it is still known (waiting, running or recently ended)."""
        now = self._clock()
        self._registry.prune(now)
        return self._registry.find(request_id, user_id, now)

    def status(self, request_id: str, user_id: str) -> RequestInfo:
        """The caller's request as it stands; NotFound for unknown, expired or others'."""
        now = self._clock()
        self._registry.prune(now)
        return self._info(self._registry.lookup(request_id, user_id, now), now)

    def requests(self, user_id: str | None = None) -> list[RequestInfo]:
        """Requests waiting or running, of ``user_id`` (None: everyone's), running first.

        Read-only: the operator's view of the queue (ListRequests).
        """
        now = self._clock()
        found: list[RequestInfo] = []
        if user_id is not None and user_id not in self._active_by_user:
            return found  # the common case on every turn: nothing of this user's is active
        for lane in self._lanes.values():
            running = sorted(lane.running, key=lambda t: t.seq)
            waiting = sorted(lane.queue, key=lane.queue.position)
            for ticket in (*running, *waiting):
                if ticket.state in ("queued", "running") and (
                    user_id is None or ticket.user_id == user_id
                ):
                    found.append(self._info(ticket, now))
        commands = sorted(self._commands, key=lambda t: t.seq)
        for ticket in commands:
            if ticket.state in ("queued", "running") and user_id in (None, ticket.user_id):
                found.append(self._info(ticket, now))
        return found

    def position(self, ticket: Ticket) -> int:
        """Requests that will get a slot before this one (0 = next); -1 if it is not waiting."""
        if ticket.state != "queued":
            return -1
        if ticket.provider == COMMANDS:
            return self._turns_ahead(ticket)
        return self._lanes[ticket.provider].position(ticket, self._clock())

    def _turns_ahead(self, ticket: Ticket) -> int:
        """A waiting command's position: the earlier turns of its conversation."""
        turns = self._conversations.get(ticket.conversation_id or "", [])
        return turns.index(ticket) if ticket in turns else 0

    async def watch_position(
        self, ticket: Ticket, min_interval_s: float = 0.2
    ) -> AsyncIterator[tuple[int, float]]:
        """Yield (position, estimated_wait_s) now and on every change, while the ticket waits.

        Changes closer together than ``min_interval_s`` (event-loop time) are merged:
        the value yielded after the pause is the latest one, never a stale one.
        """
        if ticket.provider == COMMANDS:
            return  # it waits for its conversation only: no queue position to report
        async for update in self._lanes[ticket.provider].watch(ticket, self._clock, min_interval_s):
            yield update

    def stats(self) -> QueueStats:
        providers = {name: lane.stats() for name, lane in self._lanes.items()}
        return QueueStats(
            providers=providers,
            total_waiting=self._caps.total,
            total_running=self._running_total(),
            max_pending=self._caps.max_pending,
            max_pending_per_user=self._caps.max_pending_per_user,
            active_users=self.active_users(),
            accepting=self._closing is None,
        )

    def retained(self) -> int:
        """Requests known now: waiting, running, or ended within ``retention_s``."""
        self._registry.prune(self._clock())
        return len(self._registry)

    def active_users(self) -> int:
        """Distinct users with a request waiting or holding a slot."""
        return len(self._active_by_user)

    def _running_total(self) -> int:
        return sum(len(lane.running) for lane in self._lanes.values())

    def _info(self, ticket: Ticket, now: float) -> RequestInfo:
        position, wait = -1, 0.0
        if ticket.state == "queued" and ticket.provider == COMMANDS:
            position = self._turns_ahead(ticket)
        elif ticket.state == "queued":
            lane = self._lanes[ticket.provider]
            position = lane.position(ticket, now)
            wait = lane.estimate_wait(position, now, ticket.model)
        return RequestInfo(
            request_id=ticket.request_id,
            user_id=ticket.user_id,
            provider=ticket.provider,
            priority=ticket.priority,
            state=ticket.state,
            position=position,
            estimated_wait_s=wait,
            enqueued_at=ticket.enqueued_at,
            started_at=ticket.started_at,
            finished_at=ticket.finished_at,
            model=ticket.model,
            backend=ticket.backend,
            conversation_id=ticket.conversation_id,
            error=ticket._error,
        )


def _bump(counts: dict[str, int], key: str, delta: int) -> None:
    n = counts.get(key, 0) + delta
    if n > 0:
        counts[key] = n
    else:
        counts.pop(key, None)
