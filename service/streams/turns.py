"""Chat turns as re-attachable streams: the disconnect policy, re-attach and idempotent retries.

Every chat request gets a run (``service.streams.run``) under its user and
request id before it reaches the chat service, so a second request with the
same id finds it and attaches instead of starting another model call.

- ``cancel`` (the default): the turn runs in the caller's task, exactly as
  without runs; the caller going away cancels it. Its events still go to the
  run, so retries and watchers can follow it while it lasts.
- ``continue``: the turn runs in a task owned by this object; callers only
  follow the run, and their going away leaves the turn running. A request
  still waiting for a slot when its last follower has been gone for
  ``resume_window_s`` is cancelled, so abandoned requests do not hold the queue.

A request id that is still known to the scheduler but whose run has expired
is answered from the store (``service.streams.stored``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from service.chat import ChatService
from service.config import StreamSection
from service.errors import AgentError, Code, NotFound, RequestCancelled
from service.events import ChatEvent, TurnInput, TurnResult
from service.scheduler.interface import RequestScheduler
from service.store.base import ConversationStore
from service.streams.registry import RunRegistry
from service.streams.run import Policy, TurnRun
from service.streams.stored import conflict, settled_answer

log = logging.getLogger(__name__)

Write = Callable[[int, ChatEvent], Awaitable[None]]
"""Receives (seq, event); seq 0 marks a done rebuilt from the store."""


async def _ignore(_seq: int, _event: ChatEvent) -> None:
    """A ``Write`` for callers that want only the result."""


class StreamingTurns:
    """Runs, re-attaches and retries chat turns; the owner of every turn run."""

    def __init__(
        self,
        chat: ChatService,
        scheduler: RequestScheduler,
        store: ConversationStore,
        settings: StreamSection,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._chat = chat
        self._scheduler = scheduler
        self._store = store
        self._default: Policy = settings.on_disconnect
        self._window_s = settings.resume_window_s
        self.runs = RunRegistry(
            resume_window_s=settings.resume_window_s,
            buffer_events=settings.buffer_events,
            max_bytes=settings.buffer_max_bytes,
            clock=clock,
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._abandon_timers: dict[TurnRun, asyncio.TimerHandle] = {}

    # --- entry points ---------------------------------------------------------

    async def stream(self, turn: TurnInput, policy: Policy | None, write: Write) -> None:
        """Run the turn (or attach to the one with its id): every event to ``write``.

        The last write is the TurnResult; a failure is raised instead.
        """
        claimed = await self._claim(turn, policy or self._default)
        if isinstance(claimed, TurnResult):
            await write(0, claimed)
            return
        run, turn, fresh = claimed
        if fresh and run.policy == "cancel":
            await self._run_here(run, turn, write)
            return
        if fresh:
            self._spawn(run, turn)
        await self.follow(run, 0, write)

    async def answer(self, turn: TurnInput, policy: Policy | None) -> TurnResult:
        """Run the turn (or attach to the one with its id) and return its answer."""
        claimed = await self._claim(turn, policy or self._default)
        if isinstance(claimed, TurnResult):
            return claimed
        run, turn, fresh = claimed
        if fresh and run.policy == "cancel":
            return await self._run_here(run, turn, _ignore)
        if fresh:
            self._spawn(run, turn)
        self._attach(run)
        try:
            return await run.wait_ended()
        finally:
            self._detach(run)

    async def watch(
        self,
        user_id: str,
        request_id: str,
        after: int,
        found: Callable[[], Awaitable[None]],
        write: Write,
    ) -> None:
        """Re-attach to the caller's request: events after ``after``, then live, then the end.

        ``found`` is awaited once the request is known to exist (NotFound otherwise).
        """
        run = self.runs.get(user_id, request_id)
        if run is not None:
            await found()
            await self.follow(run, after, write)
            return
        ticket = self._scheduler.find(request_id, user_id)
        if ticket is None:
            raise NotFound(f"no request with id {request_id!r}")
        await found()
        await write(0, await settled_answer(self._store, ticket, None))

    async def close(self) -> None:
        """Stop the turns still running in tasks of their own (at shutdown, after the drain)."""
        for timer in self._abandon_timers.values():
            timer.cancel()
        self._abandon_timers.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- claiming an id -------------------------------------------------------

    async def _claim(
        self, turn: TurnInput, policy: Policy
    ) -> tuple[TurnRun, TurnInput, bool] | TurnResult:
        """The run for this request (new: fresh=True), or the stored answer of an old one."""
        if turn.request_id:
            run = self.runs.get(turn.user_id, turn.request_id)
            if run is not None:
                if run.message != turn.message:
                    raise conflict(turn.request_id)
                return run, turn, False
            ticket = self._scheduler.find(turn.request_id, turn.user_id)
            if ticket is not None:
                return await settled_answer(self._store, ticket, turn.message)
        else:
            turn = dataclasses.replace(turn, request_id=uuid.uuid4().hex)
        # Nothing awaited since the look-up: a concurrent retry finds this run.
        run = self.runs.open(turn.user_id, turn.request_id, turn.message, policy)
        return run, turn, True

    # --- running ----------------------------------------------------------------

    async def _run_here(self, run: TurnRun, turn: TurnInput, write: Write) -> TurnResult:
        """The ``cancel`` policy: the turn runs in the caller's task, as it always did."""

        async def send(event: ChatEvent) -> None:
            await write(run.publish(event), event)

        try:
            result = await self._chat.run_turn(turn, send)
        except BaseException as exc:
            self._failed(run, exc)
            raise
        await write(run.finish(result), result)
        return result

    def _spawn(self, run: TurnRun, turn: TurnInput) -> None:
        """The ``continue`` policy: the turn runs in a task of the service's own."""
        task = asyncio.create_task(self._drive(run, turn), name=f"run-{run.request_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drive(self, run: TurnRun, turn: TurnInput) -> None:
        try:
            result = await self._chat.run_turn(turn, run.send)
        except BaseException as exc:  # the followers get it; nobody awaits this task
            self._failed(run, exc)
            if not isinstance(exc, Exception):
                raise
            return
        run.finish(result)

    def _failed(self, run: TurnRun, exc: BaseException) -> None:
        if isinstance(exc, AgentError):
            error = exc
        elif isinstance(exc, asyncio.CancelledError):
            error = RequestCancelled(f"request {run.request_id} was cancelled")
        else:
            log.error("turn %s failed unexpectedly", run.request_id, exc_info=exc)
            error = AgentError(
                "internal error in the agent service; see its log", code=Code.INTERNAL
            )
        run.fail(error)
        if run.last_seq == 0:
            # Refused before it was accepted (validation, caps, unknown conversation): the
            # id was never taken, so a corrected request may use it.
            self.runs.forget(run)

    # --- following ----------------------------------------------------------------

    async def follow(self, run: TurnRun, after: int, write: Write) -> None:
        """Every event of ``run`` after ``after`` to ``write``, live, up to its end."""
        self._attach(run)
        try:
            async for seq, event in run.follow(after):
                await write(seq, event)
        finally:
            self._detach(run)

    def _attach(self, run: TurnRun) -> None:
        run.watchers += 1
        timer = self._abandon_timers.pop(run, None)
        if timer is not None:
            timer.cancel()

    def _detach(self, run: TurnRun) -> None:
        run.watchers -= 1
        if run.watchers == 0 and run.policy == "continue" and not run.ended:
            loop = asyncio.get_running_loop()
            self._abandon_timers[run] = loop.call_later(self._window_s, self._abandon, run)

    def _abandon(self, run: TurnRun) -> None:
        """Nobody came back for a waiting request: cancel it so it leaves the queue."""
        self._abandon_timers.pop(run, None)
        if run.watchers or run.ended:
            return
        ticket = self._scheduler.find(run.request_id, run.user_id)
        if ticket is not None and ticket.state == "queued":
            log.info(
                "request %s: client gone for %.0f s while waiting; cancelled",
                run.request_id,
                self._window_s,
            )
            self._scheduler.cancel(run.request_id, run.user_id)
