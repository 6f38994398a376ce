"""Chat turns as re-attachable streams: one owner task per turn, readers that never block it.

Every chat request gets a run (``service.streams.run``) under its user and
request id before it reaches the chat service, so a second request with the
same id finds it and attaches instead of starting another model call.

The turn always runs in a task of its own and only publishes into its run;
each caller reads the run at its own pace and is the one writer of its own
call. A reader that falls too far behind is cut (``StreamOverrun``); no
reader can hold the turn, and so its provider slot, back.

- ``cancel`` (the default): when the last reader goes away (the client left,
  or it was cut) the turn is cancelled, in whatever phase it is.
- ``continue``: the turn goes on without readers. A request still waiting
  for a slot when its last reader has been gone for ``resume_window_s`` is
  cancelled, so abandoned requests do not hold the queue.

A request id that is still known to the scheduler but whose run has expired
is answered from the store (``service.streams.stored``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from service.chat import AdmittedTurn, ChatService
from service.config import StreamSection
from service.errors import AgentError, Code, NotFound, Reason, RequestCancelled
from service.events import ChatEvent, TurnInput, TurnResult
from service.scheduler.interface import Adopted, RequestScheduler
from service.scheduler.registry import RequestInfo
from service.store.base import ConversationStore
from service.streams.registry import RunRegistry
from service.streams.run import Policy, TurnRun
from service.streams.stored import conflict, settled_answer

log = logging.getLogger(__name__)

Write = Callable[[int, ChatEvent], Awaitable[None]]
"""Receives (seq, event); seq 0 marks a done rebuilt from the store."""


class StreamingTurns:
    """Runs, re-attaches and retries chat turns; the owner of every turn run and its task."""

    def __init__(
        self,
        chat: ChatService,
        scheduler: RequestScheduler,
        store: ConversationStore,
        settings: StreamSection,
        *,
        clock: Callable[[], float] = time.monotonic,
        replica: str = "",
    ) -> None:
        self._replica = replica  # this replica's id in a shared queue ("" in process)
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
        self._tasks: dict[TurnRun, asyncio.Task[None]] = {}
        self._abandon_timers: dict[TurnRun, asyncio.TimerHandle] = {}
        # Held while requests taken over are recorded as ours and their runs opened:
        # between the two, a look-up here would find a request owned by this
        # replica with no run yet.
        self._adopting = asyncio.Lock()

    # --- entry points ---------------------------------------------------------

    async def stream(self, turn: TurnInput, policy: Policy | None, write: Write) -> None:
        """Run the turn (or attach to the one with its id): every event to ``write``.

        The last write is the TurnResult; a failure is raised instead. ``write``
        is the only writer of the caller's stream.
        """
        claimed = await self._claim(turn, policy or self._default)
        if isinstance(claimed, TurnResult):
            await write(0, claimed)
            return
        await self.follow(claimed, 0, write)

    async def answer(self, turn: TurnInput, policy: Policy | None) -> TurnResult:
        """Run the turn (or attach to the one with its id) and return its answer."""
        claimed = await self._claim(turn, policy or self._default)
        if isinstance(claimed, TurnResult):
            return claimed
        self._attach(claimed)
        try:
            return await claimed.wait_ended()
        finally:
            self._detach(claimed)

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
        for _ in range(2):  # a request taken over meanwhile is looked up once more
            info = await self._scheduler.find(request_id, user_id)
            if info is None:
                raise NotFound(f"no request with id {request_id!r}")
            if info.state not in ("queued", "running"):
                break
            if self._ours_live(info):
                run = await self._run_once_adopted(user_id, request_id)
                if run is not None:
                    await found()
                    await self.follow(run, after, write)
                    return
                info = await self._scheduler.find(request_id, user_id) or info
                break
            address = await self._scheduler.replica_address(info.owner)
            if address:
                raise RunElsewhere(request_id, address)
            # Its replica is gone: take its waiting requests over now rather than at the
            # next poll, so this watcher follows the request here at once.
            await self._adopt_now()
            run = self.runs.get(user_id, request_id)
            if run is not None:
                await found()
                await self.follow(run, after, write)
                return
        else:
            raise AgentError(
                f"request {request_id} is moving to another service replica; re-attach",
                code=Code.UNAVAILABLE,
                retry_after_s=1.0,
                reason=Reason.REQUEST_MOVED,
            )
        await found()
        await write(0, await settled_answer(self._store, info, None))

    # --- requests of replicas that went away ------------------------------------

    async def adopt_forever(self, interval_s: float = 1.0) -> None:
        """Take over, now and then, the waiting requests of replicas that went away.

        Each runs here as if sent with ``on_disconnect: continue``: its client (or
        the gateway on its behalf) re-attaches through any replica; one nobody comes
        back for within ``resume_window_s`` is cancelled while it still waits.
        """
        while True:
            try:
                await self._adopt_now()
            except AgentError as exc:
                log.warning("taking over requests of other replicas failed: %s", exc.message)
            await asyncio.sleep(interval_s)  # a safety poll: adoption is rare

    async def _adopt_now(self) -> None:
        async with self._adopting:
            for adopted in await self._scheduler.adopt():
                self._take_over(adopted)

    def _ours_live(self, info: RequestInfo) -> bool:
        return info.state in ("queued", "running") and info.owner in ("", self._replica)

    async def _run_once_adopted(self, user_id: str, request_id: str) -> TurnRun | None:
        """This replica's run of a request it owns, waiting out a take-over in flight."""
        run = self.runs.get(user_id, request_id)
        if run is None and self._adopting.locked():
            async with self._adopting:
                run = self.runs.get(user_id, request_id)
        return run

    def _take_over(self, adopted: Adopted) -> None:
        admission = adopted.admission
        if self.runs.get(admission.user_id, admission.request_id) is not None:
            return
        admitted = self._chat.resume(adopted)
        # Numbered above anything the old replica sent, so a client's Last-Event-ID
        # from there replays this run from its start and event ids only grow.
        run = self.runs.open(
            admission.user_id,
            admission.request_id,
            admitted.turn.message,
            "continue",
            first_seq=int(time.time() * 1000),
        )
        log.info("request %s: taken over from a replica that went away", run.request_id)
        self._start(run, admitted)
        loop = asyncio.get_running_loop()
        self._abandon_timers[run] = loop.call_later(self._window_s, self._abandon, run)

    async def close(self) -> None:
        """Stop the turns still running (at shutdown, after the drain)."""
        for timer in self._abandon_timers.values():
            timer.cancel()
        self._abandon_timers.clear()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- claiming an id -------------------------------------------------------

    async def _claim(self, turn: TurnInput, policy: Policy) -> TurnRun | TurnResult:
        """The run of this request (started now if new), or the stored answer of an old one."""
        if not turn.request_id:
            raise ValueError("a turn's request_id is minted at the edge")  # a wiring bug
        run = self.runs.get(turn.user_id, turn.request_id)
        if run is None:
            info = await self._scheduler.find(turn.request_id, turn.user_id)
            if info is not None and self._ours_live(info):
                run = await self._run_once_adopted(turn.user_id, turn.request_id)
                if run is None:
                    info = await self._scheduler.find(turn.request_id, turn.user_id) or info
            if info is not None and run is None:
                return await settled_answer(self._store, info, turn.message)
            run = run or self.runs.get(turn.user_id, turn.request_id)  # a concurrent retry's
        if run is not None:
            if run.message != turn.message:
                raise conflict(turn.request_id)
            return run
        # Nothing awaited since the last look-up: a concurrent retry finds this run.
        run = self.runs.open(turn.user_id, turn.request_id, turn.message, policy)
        try:
            admitted = await self._chat.admit(turn)
        except BaseException as exc:
            # Refused before it was accepted (validation, limits, caps, unknown
            # conversation): the id was never taken, so a corrected request may use it.
            self._failed(run, exc)
            self.runs.forget(run)
            raise
        self._start(run, admitted)
        return run

    def _start(self, run: TurnRun, admitted: AdmittedTurn) -> None:
        task = asyncio.create_task(self._drive(run, admitted), name=f"run-{run.request_id}")
        self._tasks[run] = task
        task.add_done_callback(lambda _: self._tasks.pop(run, None))

    # --- running ----------------------------------------------------------------

    async def _drive(self, run: TurnRun, admitted: AdmittedTurn) -> None:
        try:
            result = await self._chat.run(admitted, run.send)
        except BaseException as exc:  # the readers get it; nobody awaits this task
            self._failed(run, exc)
            if not isinstance(exc, Exception | asyncio.CancelledError):
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

    # --- following ----------------------------------------------------------------

    async def follow(self, run: TurnRun, after: int, write: Write) -> None:
        """Every event of ``run`` after ``after`` to ``write``, live, up to its end.

        Raises the run's StreamOverrun if this reader fell too far behind.
        """
        self._attach(run)
        follower = run.add_follower(after)
        try:
            async for seq, event in run.follow(after, follower):
                await write(seq, event)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if follower.cut and task is not None and task.uncancel() == 0:
                raise run.overrun() from None
            raise
        finally:
            run.remove_follower(follower)
            self._detach(run)

    def _attach(self, run: TurnRun) -> None:
        run.watchers += 1
        timer = self._abandon_timers.pop(run, None)
        if timer is not None:
            timer.cancel()

    def _detach(self, run: TurnRun) -> None:
        run.watchers -= 1
        if run.watchers or run.ended:
            return
        if run.policy == "cancel":
            # Its last reader has gone: nobody will see the answer, so stop the turn.
            task = self._tasks.get(run)
            if task is not None:
                task.cancel()
            return
        loop = asyncio.get_running_loop()
        self._abandon_timers[run] = loop.call_later(self._window_s, self._abandon, run)

    def _abandon(self, run: TurnRun) -> None:
        """Nobody came back for a waiting request: cancel it so it leaves the queue."""
        self._abandon_timers.pop(run, None)
        if run.watchers or run.ended:
            return
        task = asyncio.ensure_future(self._abandon_if_waiting(run))
        task.add_done_callback(_log_failure)

    async def _abandon_if_waiting(self, run: TurnRun) -> None:
        info = await self._scheduler.find(run.request_id, run.user_id)
        if info is not None and info.state == "queued" and not run.watchers:
            log.info(
                "request %s: client gone for %.0f s while waiting; cancelled",
                run.request_id,
                self._window_s,
            )
            await self._scheduler.cancel(run.request_id, run.user_id)


class RunElsewhere(AgentError):
    """The request's events are at another replica (``address``): the RPC layer forwards."""

    code = Code.UNAVAILABLE

    def __init__(self, request_id: str, address: str) -> None:
        super().__init__(
            f"request {request_id} runs on another replica; re-attach again",
            retry_after_s=1.0,
        )
        self.address = address


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("abandoning a request failed", exc_info=task.exception())
