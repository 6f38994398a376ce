"""One request's event log (a "turn run"): numbered events, their followers, and the end.

Events are numbered from 1 in the order the turn produced them; the final
``TurnResult`` (the ``done`` event) is numbered too. A follower replays the
events after the last number it saw, then waits for more, so a client that
re-attaches gets every later event exactly once. The log keeps at most
``max_events`` events: past that the oldest go, and a follower that was
further behind sees a gap in the numbers (the ``done`` still carries the
whole answer).

A follower that is reading live and falls so far behind that an event it has
not read yet is dropped is cut (``fell_behind``): its reader stops with
``StreamOverrun``. The turn never waits for a reader.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Literal, Protocol

from service.errors import AgentError, Code
from service.events import ChatEvent, Queued, Started, ToolCalled, ToolReturned, TurnResult
from service.providers.base import TextDelta

Policy = Literal["cancel", "continue"]

# A rough per-event overhead (object headers, the slot in the list): the byte
# cap bounds memory, it need not count it exactly.
_EVENT_BYTES = 96


def event_size(event: ChatEvent) -> int:
    """Approximate memory held by one buffered event."""
    if isinstance(event, TextDelta):
        return _EVENT_BYTES + len(event.text)
    if isinstance(event, TurnResult):
        tools = sum(_EVENT_BYTES + len(t.result) + 32 * len(t.arguments) for t in event.tool_calls)
        return 2 * _EVENT_BYTES + len(event.response) + tools
    if isinstance(event, ToolReturned):
        return _EVENT_BYTES + len(event.result)
    if isinstance(event, ToolCalled):
        return _EVENT_BYTES + 32 * len(event.arguments)
    assert isinstance(event, Queued | Started)
    return _EVENT_BYTES


class StreamOverrun(AgentError):
    """A reader fell so far behind its request's events that unread ones were dropped."""

    code = Code.ABORTED


class Follower:
    """One live reader of a run: the next number it wants, and its task (to cut it)."""

    __slots__ = ("cut", "next_seq", "task")

    def __init__(self, next_seq: int, task: asyncio.Task[object] | None) -> None:
        self.next_seq = next_seq
        self.task = task
        self.cut = False


class Ledger(Protocol):
    """What a run reports to the registry that accounts for it."""

    def grew(self, run: TurnRun, delta: int) -> None: ...

    def ended(self, run: TurnRun) -> None: ...


class TurnRun:
    """The numbered events of one request, followed live by any number of readers."""

    __slots__ = (
        "_events",
        "_first",
        "_followers",
        "_ledger",
        "_max_events",
        "_next",
        "_waiters",
        "ended_at",
        "error",
        "message",
        "policy",
        "request_id",
        "result",
        "size",
        "user_id",
        "watchers",
    )

    def __init__(
        self,
        *,
        user_id: str,
        request_id: str,
        message: str,
        policy: Policy,
        max_events: int,
        ledger: Ledger,
        first_seq: int = 1,
    ) -> None:
        self.user_id = user_id
        self.request_id = request_id
        self.message = message  # a retry with the same id must carry the same message
        self.policy: Policy = policy
        self._max_events = max_events
        self._ledger = ledger
        self._events: list[ChatEvent] = []
        self._first = first_seq  # the seq of _events[0]
        self._next = first_seq
        self._waiters: list[asyncio.Future[None]] = []
        self.result: TurnResult | None = None
        self.error: AgentError | None = None
        self.ended_at: float | None = None  # the registry's clock
        # The run itself, its key and its registry slot weigh about four events.
        self.size = 4 * _EVENT_BYTES + len(message)
        self.watchers = 0  # followers attached now (continue: none → maybe abandoned)
        self._followers: list[Follower] = []

    def __repr__(self) -> str:
        return f"TurnRun({self.request_id!r}, user={self.user_id!r}, last={self.last_seq})"

    @property
    def ended(self) -> bool:
        return self.result is not None or self.error is not None

    @property
    def last_seq(self) -> int:
        """The number of the latest event; 0 before the first."""
        return self._next - 1

    @property
    def first_seq(self) -> int:
        """The number of the oldest event still buffered."""
        return self._first

    def __len__(self) -> int:
        return len(self._events)

    # --- writing (the turn) ------------------------------------------------------

    def publish(self, event: ChatEvent) -> int:
        """Append an event; its number."""
        seq = self._next
        self._next = seq + 1
        self._events.append(event)
        grow = event_size(event)
        if len(self._events) > self._max_events:
            grow -= event_size(self._events[0])
            del self._events[0]
            self._first += 1
            self._cut_laggards()
        self.size += grow
        self._ledger.grew(self, grow)
        if self._waiters:
            self._wake()
        return seq

    async def send(self, event: ChatEvent) -> None:
        """``publish`` in the shape of ChatService's ``send``."""
        self.publish(event)

    def finish(self, result: TurnResult) -> int:
        """End with the answer (the last event); its number."""
        seq = self.publish(result)
        self.result = result
        self._ledger.ended(self)
        return seq

    def fail(self, error: AgentError) -> None:
        """End with an error; followers raise it after the events they have not seen."""
        if self.ended:
            return
        self.error = error
        self._ledger.ended(self)
        self._wake()

    def trim(self, wanted: int) -> int:
        """Drop the oldest events (never the latest) until ``wanted`` bytes are freed."""
        freed = 0
        while freed < wanted and len(self._events) > 1:
            freed += event_size(self._events[0])
            del self._events[0]
            self._first += 1
        self.size -= freed
        if freed:
            self._cut_laggards()
        return freed

    def _cut_laggards(self) -> None:
        """Cut every live reader whose next event has just been dropped."""
        for follower in self._followers:
            if follower.next_seq < self._first and not follower.cut:
                follower.cut = True
                if follower.task is not None:
                    follower.task.cancel()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # --- reading (followers) -----------------------------------------------------

    def add_follower(self, after: int) -> Follower:
        """Register the current task as a live reader of the events after ``after``."""
        follower = Follower(max(after + 1, self._first), asyncio.current_task())
        self._followers.append(follower)
        return follower

    def remove_follower(self, follower: Follower) -> None:
        with contextlib.suppress(ValueError):
            self._followers.remove(follower)

    def overrun(self) -> StreamOverrun:
        return StreamOverrun(
            f"the client read request {self.request_id}'s events too slowly: more than "
            f"{self._max_events} were waiting for it, so its stream was cut"
        )

    async def follow(
        self, after: int, follower: Follower | None = None
    ) -> AsyncIterator[tuple[int, ChatEvent]]:
        """(seq, event) for every event numbered above ``after``, live, up to the end.

        Always ends with the ``done`` event (sent again to a follower that had
        seen it already) or by raising the run's error. ``follower`` (from
        ``add_follower``) records how far the reader got, so it can be cut.
        """
        seen = after
        sent_result = False
        while True:
            start = max(seen + 1, self._first)
            index = start - self._first
            if index < len(self._events):
                batch = self._events[index:]  # a copy: the log may move while we yield
                for offset, event in enumerate(batch):
                    sent_result = sent_result or event is self.result
                    if follower is not None:
                        follower.next_seq = start + offset + 1
                    yield start + offset, event
                seen = start + len(batch) - 1
                continue
            if self.result is not None:
                if not sent_result:
                    yield self.last_seq, self.result
                return
            if self.error is not None:
                raise self.error.copy()
            await self._changed()

    async def wait_ended(self) -> TurnResult:
        """The answer once the run ends, or its error raised."""
        while not self.ended:
            await self._changed()
        if self.result is not None:
            return self.result
        assert self.error is not None
        raise self.error.copy()

    async def _changed(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter.cancelled():  # the follower went away; a woken waiter is gone already
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
