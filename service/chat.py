"""One chat turn from request to stored answer.

Order of a turn: validate → (command? answer it) → find the conversation →
take the conversation's lock (turns of one conversation run one at a time, in
arrival order) → wait in the scheduler for a provider slot → run the agent
loop in a worker task → store the turn in one transaction → final event.

The worker task exists so a running request can be cancelled from outside
(CancelRequest cancels the worker) while the consumer — the RPC handler — is
still there to report it; a consumer that goes away cancels the worker too.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing
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
from service.history import fit_history, merge_consecutive
from service.limits import Limits
from service.profiles import ProfileDirectory
from service.providers.base import CompletionRequest, Provider
from service.scheduler import RequestInfo, Scheduler, State, Ticket
from service.store.base import Conversation, ConversationStore, NewMessage, StoredMessage
from service.turns import ConversationTurns, WaitingTurn

log = logging.getLogger(__name__)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_END = object()


class ChatService:
    """Runs chat turns for every user of the service."""

    def __init__(
        self,
        settings: Settings,
        *,
        providers: Mapping[str, Provider],
        default_provider: str,
        store: ConversationStore,
        scheduler: Scheduler,
        profiles: ProfileDirectory,
        agent: AgentLoop,
        limits: Limits | None = None,
    ) -> None:
        self._settings = settings
        self._limits = limits or Limits(settings.limits, store)
        self._providers = providers
        self._default = default_provider
        self._store = store
        self._scheduler = scheduler
        self._profiles = profiles
        self._agent = agent
        self._commands = Commands(store, profiles, self._limits)
        self._turns = ConversationTurns()
        self._persisting: set[asyncio.Task[Any]] = set()
        self._workers: set[asyncio.Task[None]] = set()
        self._interrupted: str | None = None  # why running turns were stopped (shutdown)

    # --- entry point ---------------------------------------------------------

    async def run_turn(self, turn: TurnInput) -> AsyncGenerator[ChatEvent, None]:
        """Events of one turn; the last is a TurnResult, or an AgentError is raised."""
        if not turn.message.strip():
            raise InvalidRequest("message must not be empty")
        limit = self._settings.api.max_message_chars
        if len(turn.message) > limit:
            raise InvalidRequest(
                f"message is {len(turn.message)} characters long; the limit is {limit}"
                " (api.max_message_chars)"
            )
        if not 1 <= turn.priority <= 10:
            raise InvalidRequest("priority must be between 1 (highest) and 10 (lowest)")
        if turn.request_id and not _REQUEST_ID.match(turn.request_id):
            raise InvalidRequest("request_id must be 1-64 letters, digits, '-' or '_'")
        request_id = turn.request_id or uuid.uuid4().hex
        if Commands.is_command(turn.message):
            async for event in self._command(turn, request_id):
                yield event
            return
        provider = self._provider_for(turn)
        model = turn.model or provider.model
        admitted = await self._limits.admit(turn.user_id)  # LimitReached: rate or budget
        conversation, fresh = await self._conversation_for(turn)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.api_server.request_timeout
        waiting = WaitingTurn(request_id, turn.user_id, provider.name, turn.priority)
        ahead = self._turns.busy(conversation.id)
        if ahead:  # another turn of this conversation runs: say so before waiting for it
            yield Queued(request_id, ahead, ahead * self._service_time(provider.name))
        async with self._turns.turn(conversation.id, waiting):
            ticket = self._scheduler.submit(
                user_id=turn.user_id,
                provider=provider.name,
                priority=turn.priority,
                request_id=request_id,
                model=model,
                max_active=admitted.max_active,
            )
            outcome: TurnStatus = "failed"
            try:
                # aclosing: a consumer that leaves at one of our yields must still end the
                # inner steps now (worker cancelled, upstream closed) before the slot is freed.
                if not ticket.holds_slot:  # a free slot is granted at submit: no waiting
                    async with aclosing(
                        self._wait_for_slot(ticket, deadline - loop.time())
                    ) as waits:
                        async for queued in waits:
                            yield queued
                yield Started(request_id, conversation.id, provider.name, model)
                result: TurnResult | None = None
                async with aclosing(
                    self._generate(turn, ticket, conversation, fresh, provider, model, deadline)
                ) as events:
                    async for event in events:
                        if isinstance(event, TurnResult):
                            result = event
                        else:
                            yield event
                assert result is not None
                outcome = "complete"
                yield result
            except (RequestCancelled, asyncio.CancelledError, GeneratorExit):
                outcome = "cancelled" if self._interrupted is None else "failed"
                raise
            finally:
                self._scheduler.finish(ticket, "completed" if outcome == "complete" else outcome)

    def interrupt_running(self, reason: str) -> int:
        """Stop every running turn (shutdown after the grace period); each ends UNAVAILABLE.

        The partial answers are stored, marked failed. Returns how many were stopped.
        """
        self._interrupted = reason
        workers = [w for w in self._workers if not w.done()]
        for worker in workers:
            worker.cancel()
        return len(workers)

    def waiting_status(self, request_id: str, user_id: str) -> RequestInfo:
        """A turn waiting for its conversation (not yet in the scheduler); NotFound otherwise."""
        waiting, ahead = self._turns.find(request_id, user_id)
        return self._waiting_info(waiting, "queued", ahead)

    def cancel_waiting(self, request_id: str, user_id: str) -> RequestInfo:
        """Cancel a turn waiting for its conversation; NotFound when there is none."""
        waiting = self._turns.cancel(request_id, user_id)
        return self._waiting_info(waiting, "cancelled", -1)

    def _waiting_info(self, waiting: WaitingTurn, state: State, ahead: int) -> RequestInfo:
        wait = ahead * self._service_time(waiting.provider) if ahead > 0 else 0.0
        return RequestInfo(
            request_id=waiting.request_id,
            user_id=waiting.user_id,
            provider=waiting.provider,
            priority=waiting.priority,
            state=state,
            position=ahead,
            estimated_wait_s=wait,
            enqueued_at=waiting.since,
            started_at=None,
            finished_at=None,
        )

    def _service_time(self, provider: str) -> float:
        lane = self._scheduler.stats().providers.get(provider)
        return lane.avg_service_s if lane is not None else 0.0

    def model_of(self, provider: str) -> str:
        """The configured model of a provider."""
        return self._providers[provider].model

    async def wait_persisted(self) -> None:
        """Let stores of interrupted turns finish (used at shutdown)."""
        if self._persisting:
            await asyncio.gather(*self._persisting, return_exceptions=True)

    # --- steps ---------------------------------------------------------------

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

    async def _command(self, turn: TurnInput, request_id: str) -> AsyncIterator[ChatEvent]:
        conversation: Conversation | None = None
        if turn.conversation_id:
            conversation = await self._store.get_conversation(turn.user_id, turn.conversation_id)
        elif not turn.new_conversation:
            conversation = await self._store.current_conversation(turn.user_id)
        if conversation is None:
            reply = await self._commands.run(turn.user_id, turn.message, None)
        else:
            waiting = WaitingTurn(request_id, turn.user_id, "command", turn.priority)
            async with self._turns.turn(conversation.id, waiting):
                reply = await self._commands.run(turn.user_id, turn.message, conversation)
        yield Started(request_id, reply.conversation_id, "command", "")
        yield TurnResult(
            reply.text, reply.conversation_id, request_id, Usage(), "command", "", "command"
        )

    async def _wait_for_slot(self, ticket: Ticket, wait_s: float) -> AsyncGenerator[Queued, None]:
        acquire = asyncio.ensure_future(self._scheduler.acquire(ticket, max(wait_s, 0.0)))
        try:
            async for position, wait in self._scheduler.watch_position(ticket):
                yield Queued(ticket.request_id, position, wait)
            await acquire
        finally:
            if not acquire.done():
                acquire.cancel()
                await asyncio.gather(acquire, return_exceptions=True)

    async def _generate(
        self,
        turn: TurnInput,
        ticket: Ticket,
        conversation: Conversation,
        fresh: bool,
        provider: Provider,
        model: str,
        deadline: float,
    ) -> AsyncGenerator[ChatEvent, None]:
        # A conversation created by this very turn has no history to read.
        stored = [] if fresh else await self._store.messages(turn.user_id, conversation.id)
        profile = await self._profiles.load(turn.user_id)
        user_message = Message("user", [TextBlock(turn.message)])
        history = merge_consecutive([*(_as_message(m) for m in stored), user_message])
        system = self._settings.api.system_prompt
        if profile.system_prompt:
            system = f"{system}\n\n{profile.system_prompt}"
        if profile.display_name and profile.display_name != turn.user_id:
            system = f"{system}\n\nThe user's name is {profile.display_name}."
        request = CompletionRequest(
            messages=fit_history(history, self._settings.api.history_budget_tokens),
            system=system,
            max_tokens=self._limits.of(turn.user_id).cap_output(self._settings.api.max_tokens),
            model=model,
            user_id=turn.user_id,
        )
        transcript = Transcript(provider.name, model, ticket.request_id)
        events: asyncio.Queue[object] = asyncio.Queue()

        async def work() -> None:
            try:
                async with asyncio.timeout_at(deadline):
                    await self._agent.run(provider, request, transcript, events.put_nowait)
            except TimeoutError:
                raise DeadlineExceeded(
                    f"the request did not finish within request_timeout "
                    f"({self._settings.api_server.request_timeout:g} s)"
                ) from None

        worker = asyncio.create_task(work(), name=f"turn-{ticket.request_id}")
        worker.add_done_callback(lambda _: events.put_nowait(_END))
        self._workers.add(worker)
        worker.add_done_callback(self._workers.discard)

        def cancel_worker() -> None:
            worker.cancel()

        ticket.add_cancel_callback(cancel_worker)
        status: TurnStatus = "cancelled"
        try:
            while (event := await events.get()) is not _END:
                yield event  # type: ignore[misc]
            if worker.cancelled():
                if self._interrupted is not None:
                    status = "failed"
                    raise ServiceUnavailable(self._interrupted, retry_after_s=5.0)
                raise RequestCancelled(f"request {ticket.request_id} was cancelled")
            error = worker.exception()
            if error is not None:
                status = "failed"
                raise error
            status = "complete"
        finally:
            if not worker.done():
                worker.cancel()
                await asyncio.gather(worker, return_exceptions=True)
            await self._persist(turn, conversation, transcript, user_message, status)
        yield TurnResult(
            response=transcript.text,
            conversation_id=conversation.id,
            request_id=ticket.request_id,
            usage=transcript.usage,
            provider=provider.name,
            model=model,
            stop_reason=transcript.stop_reason,
            tool_calls=tuple(transcript.tools),
        )

    async def _persist(
        self,
        turn: TurnInput,
        conversation: Conversation,
        transcript: Transcript,
        user_message: Message,
        status: TurnStatus,
    ) -> None:
        """Store the turn in one transaction, even when the consumer is being cancelled."""
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


def _as_message(stored: StoredMessage) -> Message:
    return Message(stored.role, stored.content)
