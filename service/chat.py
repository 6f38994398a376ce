"""One chat turn from request to stored answer.

Order of a turn: validate → find the conversation → submit to the scheduler
(the one owner of every accepted request: it holds the turn back while an
earlier turn of the conversation is waiting or running, and until a provider
slot is free) → build the model request → run the agent loop → store the turn
in one transaction → the result.

Events go out through ``send`` as they happen; awaiting it is the stream's
back-pressure. The agent loop runs in a task of its own inside a task group,
so an owner's CancelRequest can stop the work (the ticket's cancel callback
cancels that task) while the caller is still there to report it; a caller
that goes away cancels the group, and with it the work.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from service.agent import AgentLoop, Transcript, TurnStatus
from service.commands import Commands
from service.config import Settings
from service.content import Message, TextBlock, Usage
from service.errors import (
    AgentError,
    DeadlineExceeded,
    InvalidRequest,
    RequestCancelled,
    ServiceUnavailable,
)
from service.events import ChatEvent, Queued, Started, TurnInput, TurnResult
from service.limits import Limits
from service.observability.metrics import ServiceMetrics
from service.observability.tracing import Tracing
from service.pool import HostPool
from service.profiles import ProfileDirectory
from service.prompt import PromptRules, build_request, without_unanswered
from service.providers.base import AssistantTurn, CompletionRequest, Provider
from service.rpc.calls import note_request_id
from service.scheduler import COMMANDS, Outcome, Ticket, check_request
from service.scheduler.interface import RequestScheduler
from service.store.base import Conversation, ConversationStore, NewMessage

log = logging.getLogger(__name__)

Send = Callable[[ChatEvent], Awaitable[None]]


async def discard(_event: ChatEvent) -> None:
    """A ``send`` for callers that want only the result."""


class ChatService:
    """Runs chat turns for every user of the service."""

    def __init__(
        self,
        settings: Settings,
        *,
        providers: Mapping[str, Provider],
        default_provider: str,
        store: ConversationStore,
        scheduler: RequestScheduler,
        profiles: ProfileDirectory,
        agent: AgentLoop,
        limits: Limits | None = None,
        pools: Mapping[str, HostPool] | None = None,
        metrics: ServiceMetrics | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics or ServiceMetrics()
        self._tracing = tracing or Tracing()
        self._limits = limits or Limits(settings.limits, store)
        self._providers = providers
        self._default = default_provider
        self._store = store
        self._scheduler = scheduler
        self._profiles = profiles
        self._agent = agent
        self._commands = Commands(store, profiles, self._limits)
        self._pools = pools or {}  # providers whose slots sit on several hosts
        self._rules = PromptRules(
            system_prompt=settings.api.system_prompt,
            max_tokens=settings.api.max_tokens,
            history_budget_tokens=settings.api.history_budget_tokens,
        )
        self._persisting: set[asyncio.Task[Any]] = set()
        self._workers: set[asyncio.Task[None]] = set()
        self._interrupted: str | None = None  # why running turns were stopped (shutdown)

    # --- entry point ---------------------------------------------------------

    async def run_turn(self, turn: TurnInput, send: Send = discard) -> TurnResult:
        """Run one turn: its events go to ``send``; the result is returned, errors raised."""
        self._validate(turn)
        request_id = turn.request_id or uuid.uuid4().hex
        note_request_id(request_id)
        if Commands.is_command(turn.message):
            return await self._command(turn, request_id, send)
        provider = self._provider_for(turn)
        model = turn.model or provider.model
        try:
            admitted = await self._limits.admit(turn.user_id)  # LimitReached: rate or budget
            conversation, fresh = await self._conversation_for(turn)
            ticket = self._scheduler.submit(
                user_id=turn.user_id,
                provider=provider.name,
                priority=turn.priority,
                request_id=request_id,
                conversation_id=conversation.id,
                model=model,
                max_active=admitted.max_active,
            )
        except AgentError as exc:
            self._metrics.refused(provider.name, exc)
            raise
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.api_server.request_timeout
        timer = self._metrics.timed(provider.name, send)
        send = timer.send
        outcome: Outcome = "failed"
        try:
            if not ticket.holds_slot:  # a free slot is granted at submit: no waiting
                with self._tracing.span("queue wait", provider=provider.name):
                    await self._wait_for_slot(ticket, deadline - loop.time(), send)
            self._metrics.got_slot(provider.name, _waited(ticket))
            await send(Started(request_id, conversation.id, provider.name, model))
            result = await self._generate(
                turn, ticket, conversation, fresh, provider, model, deadline, send
            )
            outcome = "completed"
            return result
        except (RequestCancelled, asyncio.CancelledError):
            outcome = "cancelled" if self._interrupted is None else "failed"
            raise
        finally:
            self._scheduler.finish(ticket, outcome)
            timer.done()

    def interrupt_running(self, reason: str) -> int:
        """Stop every running turn (shutdown after the grace period); each ends UNAVAILABLE.

        The partial answers are stored, marked failed. Returns how many were stopped.
        """
        self._interrupted = reason
        workers = [w for w in self._workers if not w.done()]
        for worker in workers:
            worker.cancel()
        return len(workers)

    def model_of(self, provider: str) -> str:
        """The configured model of a provider."""
        return self._providers[provider].model

    async def wait_persisted(self) -> None:
        """Let stores of interrupted turns finish (used at shutdown)."""
        if self._persisting:
            await asyncio.gather(*self._persisting, return_exceptions=True)

    # --- steps ---------------------------------------------------------------

    def _validate(self, turn: TurnInput) -> None:
        if not turn.message.strip():
            raise InvalidRequest("message must not be empty")
        limit = self._settings.api.max_message_chars
        if len(turn.message) > limit:
            raise InvalidRequest(
                f"message is {len(turn.message)} characters long; the limit is {limit}"
                " (api.max_message_chars)"
            )
        check_request(priority=turn.priority, request_id=turn.request_id or None)

    def _provider_for(self, turn: TurnInput) -> Provider:
        name = turn.provider or self._default
        if (turn.provider or turn.model) and not self._settings.api.allow_overrides:
            raise InvalidRequest("this service does not allow choosing the provider or model")
        provider = self._providers.get(name)
        if provider is None:
            configured = ", ".join(sorted(self._providers))
            raise InvalidRequest(
                f"provider {name!r} is not configured here (configured: {configured})"
            )
        return provider

    async def _conversation_for(self, turn: TurnInput) -> tuple[Conversation, bool]:
        """The conversation the turn continues, and whether this turn created it."""
        if turn.conversation_id:
            found = await self._store.get_conversation(turn.user_id, turn.conversation_id)
            return found, False
        if not turn.new_conversation:
            current = await self._store.current_conversation(turn.user_id)
            if current is not None:
                return current, False
        return await self._store.create_conversation(turn.user_id), True

    async def _command(self, turn: TurnInput, request_id: str, send: Send) -> TurnResult:
        """Answer a slash command; it waits for a running turn of its conversation."""
        conversation: Conversation | None = None
        if turn.conversation_id:
            conversation = await self._store.get_conversation(turn.user_id, turn.conversation_id)
        elif not turn.new_conversation:
            conversation = await self._store.current_conversation(turn.user_id)
        ticket = self._scheduler.submit(
            user_id=turn.user_id,
            provider=COMMANDS,
            priority=turn.priority,
            request_id=request_id,
            conversation_id=conversation.id if conversation else None,
        )
        outcome: Outcome = "failed"
        try:
            if not ticket.holds_slot:
                timeout = self._settings.api_server.request_timeout
                await self._wait_for_slot(ticket, timeout, send)
            reply = await self._commands.run(turn.user_id, turn.message, conversation)
            outcome = "completed"
        except (RequestCancelled, asyncio.CancelledError):
            outcome = "cancelled"
            raise
        finally:
            self._scheduler.finish(ticket, outcome)
        await send(Started(request_id, reply.conversation_id, "command", ""))
        return TurnResult(
            reply.text, reply.conversation_id, request_id, Usage(), "command", "", "command"
        )

    async def _wait_for_slot(self, ticket: Ticket, wait_s: float, send: Send) -> None:
        """Wait for the ticket's slot while a watcher reports its position as it moves."""

        async def report_positions() -> None:
            async for position, wait in self._scheduler.watch_position(ticket):
                await send(Queued(ticket.request_id, position, wait))

        with _first_error():
            async with asyncio.TaskGroup() as group:
                watcher = group.create_task(report_positions())
                try:
                    await self._scheduler.acquire(ticket, max(wait_s, 0.0))
                finally:
                    watcher.cancel()

    async def _generate(
        self,
        turn: TurnInput,
        ticket: Ticket,
        conversation: Conversation,
        fresh: bool,
        provider: Provider,
        model: str,
        deadline: float,
        send: Send,
    ) -> TurnResult:
        # A conversation created by this very turn has no history to read. The
        # store reads only the newest messages that can fit the budget (so a
        # turn's cost does not grow with the conversation); fit_history cuts exactly.
        budget, recent = self._rules.history_budget_tokens, self._store.recent_messages
        stored = [] if fresh else await recent(turn.user_id, conversation.id, budget)
        stored = without_unanswered(stored)  # a failed turn's question is not asked again
        profile = await self._profiles.load(turn.user_id)
        user_message = Message("user", [TextBlock(turn.message)])
        request = build_request(
            self._rules,
            history=[Message(m.role, m.content) for m in stored],
            estimates=[m.estimated_tokens for m in stored],
            message=user_message,
            profile=profile,
            max_tokens=self._limits.of(turn.user_id).cap_output(self._rules.max_tokens),
            model=model,
            user_id=turn.user_id,
        )
        transcript = Transcript(provider.name, model, ticket.request_id)
        status: TurnStatus = "cancelled"
        try:
            try:
                with _first_error():
                    async with asyncio.TaskGroup() as group:
                        worker = group.create_task(
                            self._work(provider, request, transcript, send, deadline, ticket),
                            name=f"turn-{ticket.request_id}",
                        )
                        self._workers.add(worker)
                        worker.add_done_callback(self._workers.discard)
                        ticket.add_cancel_callback(lambda: _cancel(worker))
            except Exception as exc:
                status = "failed"
                self._metrics.provider_failed(provider.name, exc)
                raise
            if worker.cancelled():  # by its owner's cancel, or by the shutdown
                if self._interrupted is not None:
                    status = "failed"
                    raise ServiceUnavailable(self._interrupted, retry_after_s=5.0)
                raise RequestCancelled(f"request {ticket.request_id} was cancelled")
            status = "complete"
        finally:
            self._metrics.spent(provider.name, model, transcript.usage)
            await self._persist(turn, conversation, transcript, user_message, status)
        return TurnResult(
            response=transcript.text,
            conversation_id=conversation.id,
            request_id=ticket.request_id,
            usage=transcript.usage,
            provider=provider.name,
            model=model,
            stop_reason=transcript.stop_reason,
            tool_calls=tuple(transcript.tools),
        )

    async def _work(
        self,
        provider: Provider,
        request: CompletionRequest,
        transcript: Transcript,
        send: Send,
        deadline: float,
        ticket: Ticket,
    ) -> None:
        async def attempt(bridge: Provider) -> None:
            transcript.live = AssistantTurn()  # a retry on another host starts afresh
            await self._agent.run(bridge, request, transcript, send)

        def sent() -> bool:
            return bool(transcript.text_parts or transcript.rounds or transcript.live.tool_calls)

        pool = self._pools.get(provider.name) if ticket.backend else None
        try:
            async with asyncio.timeout_at(deadline):
                if pool is None:
                    await self._agent.run(provider, request, transcript, send)
                else:  # the ticket's host; another one if it fails before anything was sent
                    await pool.run(ticket, attempt, sent=sent, deadline=deadline)
        except TimeoutError:
            raise DeadlineExceeded(
                f"the request did not finish within request_timeout "
                f"({self._settings.api_server.request_timeout:g} s)"
            ) from None

    async def _persist(
        self,
        turn: TurnInput,
        conversation: Conversation,
        transcript: Transcript,
        user_message: Message,
        status: TurnStatus,
    ) -> None:
        """Store the turn in one transaction, even when the caller is being cancelled."""
        rows = [
            NewMessage(
                role="user",
                content=user_message.content,
                status=status,
                request_id=transcript.request_id,
            ),
            *transcript.to_store(status),
        ]
        task = asyncio.create_task(self._store.append_messages(turn.user_id, conversation.id, rows))
        self._persisting.add(task)
        task.add_done_callback(self._persisting.discard)
        try:
            await asyncio.shield(task)
        except AgentError:
            log.exception("could not store turn %s", transcript.request_id)


class _first_error:
    """Re-raise the first error of a task group's ExceptionGroup as itself.

    The groups here hold one worker (and a position watcher), so the first
    error is the one that ended the turn; callers map plain domain errors.
    """

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, error: BaseException | None, tb: object) -> None:
        if isinstance(error, BaseExceptionGroup):
            first = error.exceptions[0]
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            raise first from None


def _waited(ticket: Ticket) -> float:
    """Seconds the ticket waited for its slot (on the scheduler's clock)."""
    started = ticket.started_mono
    return 0.0 if started is None else started - ticket.enqueued_mono


def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
