"""Summaries of the history a conversation's window has cut off (``history.summarize``).

When a turn's stepped window starts past messages of its conversation, those
messages are no longer sent. With summaries on, ``Summarizer.for_turn`` gives
the turn the conversation's stored summary (put at the head of its prompt by
``prompt.with_summary``) and, if that summary does not reach the window's
start, starts one background job for the conversation. The job folds the
messages up to the start into the summary, a chunk of a prompt's size at a
time, each chunk one model call:

- on the turn's provider and model, as a request of the scheduler like any
  other (so it waits for a slot fairly and never oversubscribes one), at the
  lowest priority, under the scheduler name ``SUMMARY_USER``: it never counts
  against the user's own queue caps or ``max_active``, so it cannot refuse or
  hold back a turn of theirs;
- checked against the user's token budgets (not the request rate) and charged
  to the user in the store's transaction that keeps the summary.

Nothing waits for a job: a turn takes the summary stored when it starts, or
none. A job that fails (a full queue, a budget used up, a provider error) is
tried again at the conversation's next turn in this process.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from service.config import HistorySection
from service.content import Message, Usage
from service.errors import AgentError, DeadlineExceeded, NotFound, RequestCancelled
from service.limits import Limits
from service.observability.metrics import ServiceMetrics
from service.pool import HostPool
from service.prompt import window_origin
from service.providers.accumulate import afold
from service.providers.base import AssistantTurn, CompletionRequest, Provider
from service.scheduler import MAX_PRIORITY, Outcome
from service.scheduler.interface import Admission, Grant, RequestScheduler, RequestSpec, settle
from service.store.base import ConversationStore, ConversationSummary, NewSummary, StoredMessage
from service.store.rows import MAX_PAGE_SIZE
from service.store.window import encode_message_token
from service.summary_prompt import next_chunk, storable, summary_request

log = logging.getLogger(__name__)

# Who summary requests are in the scheduler: no user id starts with ".", so no user's
# caps count them, and they take turns with the users' requests as one more user.
SUMMARY_USER = ".summaries"
SUMMARY_PRIORITY = MAX_PRIORITY
# Conversations whose unfinished summary is remembered for a retry (the most recent).
DEFAULT_REMEMBERED = 10_000


@dataclass(slots=True)
class _Job:
    """What one conversation's summary must reach, and the task working on it."""

    user_id: str
    provider: str
    model: str
    through: int  # the last message id the summary must cover
    task: asyncio.Task[None] | None = None


class Summarizer:
    """Keeps conversations' summaries up to their windows' starts, in the background."""

    def __init__(
        self,
        section: HistorySection,
        *,
        store: ConversationStore,
        scheduler: RequestScheduler,
        providers: Mapping[str, Provider],
        limits: Limits,
        chunk_tokens: int,
        timeout_s: float,
        pools: Mapping[str, HostPool] | None = None,
        metrics: ServiceMetrics | None = None,
        remembered: int = DEFAULT_REMEMBERED,
    ) -> None:
        self._section = section
        self._store = store
        self._scheduler = scheduler
        self._providers = providers
        self._limits = limits
        self._chunk_tokens = chunk_tokens
        self._timeout_s = timeout_s
        self._pools = pools or {}
        self._metrics = metrics or ServiceMetrics()
        self._remembered = remembered
        self._jobs: OrderedDict[str, _Job] = OrderedDict()  # conversation -> its job
        self._closed = False

    @property
    def enabled(self) -> bool:
        return self._section.summarize and not self._closed

    async def for_turn(
        self,
        user_id: str,
        conversation_id: str,
        stored: Sequence[StoredMessage],
        history: Sequence[Message],
        window: Sequence[Message],
        provider: str,
        model: str,
    ) -> str:
        """The summary to put at the head of a turn's prompt (""): never waits for one being made.

        ``stored`` are the rows ``history`` was built from, one for one, and
        ``window`` is the turn's ``prompt_window`` of them. When the window starts
        past messages the stored summary does not cover, a job is started for them.
        """
        if not self.enabled or not stored:
            return ""  # no history: nothing was ever cut off
        try:
            summary = await self._store.get_summary(user_id, conversation_id)
        except AgentError as exc:  # the turn goes ahead without it
            if not isinstance(exc, NotFound):
                log.warning("conversation %s: summary not read: %s", conversation_id, exc.message)
            return ""
        origin = window_origin(history, window)
        through = stored[origin - 1].id if origin else None
        self._want(user_id, conversation_id, through, summary, provider, model)
        return summary.text if summary is not None else ""

    @property
    def running(self) -> int:
        """How many conversations' jobs are running now."""
        return sum(1 for job in self._jobs.values() if job.task is not None)

    async def wait_idle(self) -> None:
        """Wait until no job is running (tests; a job started meanwhile is waited for too)."""
        while running := [job.task for job in self._jobs.values() if job.task is not None]:
            await asyncio.gather(*running, return_exceptions=True)

    async def close(self) -> None:
        """Stop every job (at shutdown): a summary is never worth delaying one."""
        self._closed = True
        tasks = [job.task for job in self._jobs.values() if job.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._jobs.clear()

    # --- jobs -------------------------------------------------------------------

    def _want(
        self,
        user_id: str,
        conversation_id: str,
        through: int | None,
        summary: ConversationSummary | None,
        provider: str,
        model: str,
    ) -> None:
        """Note that the summary must reach ``through`` (None: no news), and start a job."""
        covered = summary.covered_up_to if summary is not None else 0
        job = self._jobs.get(conversation_id)
        if through is not None and through > covered:
            if job is None:
                job = self._jobs[conversation_id] = _Job(user_id, provider, model, through)
            else:
                job.through = max(job.through, through)
                job.provider, job.model = provider, model
        if job is None:
            return
        self._jobs.move_to_end(conversation_id)
        if job.task is None:
            if job.through <= covered:  # done meanwhile (by another replica, say)
                del self._jobs[conversation_id]
                return
            job.task = asyncio.create_task(
                self._run(conversation_id, job), name=f"summary-{conversation_id}"
            )
        self._forget_oldest()

    def _forget_oldest(self) -> None:
        excess = len(self._jobs) - self._remembered
        if excess > 0:
            idle = [cid for cid, job in self._jobs.items() if job.task is None]
            for conversation_id in idle[:excess]:
                del self._jobs[conversation_id]

    async def _run(self, conversation_id: str, job: _Job) -> None:
        """Fold the conversation's messages into its summary until it covers ``job.through``."""
        done = False
        try:
            done = await self._catch_up(conversation_id, job)
        except NotFound:
            done = True  # the conversation was deleted
        except AgentError as exc:
            log.info("conversation %s: history not summarized: %s", conversation_id, exc.message)
        except Exception:
            log.exception("conversation %s: summarizing its history failed", conversation_id)
        finally:
            job.task = None
            if done and self._jobs.get(conversation_id) is job:
                del self._jobs[conversation_id]

    async def _catch_up(self, conversation_id: str, job: _Job) -> bool:
        """True when there is nothing (more) to summarize; errors are raised."""
        user_id = job.user_id
        while True:
            summary = await self._store.get_summary(user_id, conversation_id)
            covered = summary.covered_up_to if summary is not None else 0
            if covered >= job.through:
                return True
            rows = await self._rows(user_id, conversation_id, covered, job.through)
            if not rows:
                return True  # the messages are gone (a clear)
            chunk = next_chunk(rows, self._chunk_tokens)
            provider, model = job.provider, job.model
            request = summary_request(
                self._section.summary_prompt,
                summary.text if summary is not None else "",
                [Message(row.role, row.content) for row in chunk],
                model=model,
                user_id=user_id,
                max_tokens=self._limits.of(user_id).cap_output(self._section.summary_max_tokens),
            )
            # LimitReached when the user's budgets are used up. Nothing is reserved and no
            # request taken from the rate: a summary must never be why a turn is refused.
            budget = await self._limits.admit(user_id, request=False)
            usage = Usage()
            try:
                answer = await self._call(provider, model, request)
                usage = answer.usage
                self._metrics.spent(provider, model, usage)
                text = storable(answer.text)
                kept = await self._store.save_summary(
                    user_id,
                    conversation_id,
                    NewSummary(
                        text,
                        # An empty answer must not stand for the messages (nor replace the
                        # summary so far): covering message 0 it is only charged.
                        chunk[-1].id if text else 0,
                        provider=provider,
                        model=model,
                        input_tokens=usage.input_tokens,
                        output_tokens=usage.output_tokens,
                        cache_creation_input_tokens=usage.cache_creation_input_tokens,
                        cache_read_input_tokens=usage.cache_read_input_tokens,
                    ),
                )
            finally:
                await budget.settle(usage)
            if not text:
                log.info("conversation %s: the summary came back empty", conversation_id)
                return False  # tried again at the next turn
            if not kept:
                # Cleared, or overtaken, meanwhile: the next turn starts afresh if need be.
                return True
            log.debug("conversation %s: history summarized up to %d", conversation_id, chunk[-1].id)

    async def _rows(
        self, user_id: str, conversation_id: str, after: int, through: int
    ) -> list[StoredMessage]:
        """Messages after ``after`` up to ``through``: as many as the next chunk can take."""
        rows: list[StoredMessage] = []
        tokens = 0
        token = encode_message_token(conversation_id, after) if after else ""
        while True:
            page, token = await self._store.messages_page(
                user_id, conversation_id, MAX_PAGE_SIZE, token
            )
            for row in page:
                if row.id > through or tokens > self._chunk_tokens:
                    return rows
                rows.append(row)
                tokens += row.estimated_tokens
            if not token:
                return rows

    # --- one model call -----------------------------------------------------------

    async def _call(self, provider: str, model: str, request: CompletionRequest) -> AssistantTurn:
        """One low-priority model call through the scheduler: a slot, the call, the slot back."""
        admission = await self._scheduler.submit(
            RequestSpec(
                request_id=f"summary-{uuid.uuid4().hex}",
                user_id=SUMMARY_USER,
                provider=provider,
                priority=SUMMARY_PRIORITY,
                model=model,
            )
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        outcome: Outcome = "failed"
        error: AgentError | None = None
        try:
            grant = await self._scheduler.acquire(admission, self._timeout_s)
            answer: list[AssistantTurn] = []
            try:
                grant = await self._under_grant(admission, grant, request, answer, deadline)
            finally:
                await settle(self._scheduler.release(grant))
            outcome = "completed"
            return answer[-1]
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except AgentError as exc:
            error = exc
            raise
        finally:
            await settle(self._scheduler.finish(admission.request_id, SUMMARY_USER, outcome, error))

    async def _under_grant(
        self,
        admission: Admission,
        grant: Grant,
        request: CompletionRequest,
        answer: list[AssistantTurn],
        deadline: float,
    ) -> Grant:
        """The call, stopped when the grant's signal fires; the grant it ended under."""
        work = asyncio.ensure_future(self._work(admission, grant, request, answer, deadline))
        undo = grant.signal.on_stop(work.cancel)
        try:
            return await work
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the job itself is being stopped
            error = grant.signal.error if grant.signal.is_stopped else None
            raise error or RequestCancelled(f"request {grant.request_id} was cancelled") from None
        finally:
            undo()
            if not work.done():
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)

    async def _work(
        self,
        admission: Admission,
        grant: Grant,
        request: CompletionRequest,
        answer: list[AssistantTurn],
        deadline: float,
    ) -> Grant:
        async def attempt(bridge: Provider) -> None:
            answer.append(await afold(bridge.stream(request)))

        pool = self._pools.get(grant.provider) if grant.backend else None
        try:
            async with asyncio.timeout_at(deadline):
                if pool is None:
                    await attempt(self._providers[grant.provider])
                    return grant
                # Nobody has seen any of it: a host that fails is simply replaced.
                return await pool.run(
                    admission, grant, attempt, sent=lambda: False, deadline=deadline
                )
        except TimeoutError:
            raise DeadlineExceeded(
                f"the summary request did not finish within {self._timeout_s:g} s"
            ) from None
