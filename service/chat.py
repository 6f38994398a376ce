"""One chat turn from request to stored answer.

A turn has two steps, so a refused request costs nothing:

1. ``admit``: validate, check the user's limits, find the conversation (no
   write: a new conversation gets its id now and is created with the turn's
   first messages), and submit to the scheduler. Anything refused raises here.
2. ``run``: wait for the conversation's turn and a provider slot (publishing
   the position as it moves), call the model (the agent loop), give the slot
   back as soon as the model call is over, store the turn in one transaction,
   and only then let the conversation's next turn go.

Events go out through ``send``, which never waits for a client: the caller
(``service.streams``) publishes them into the request's bounded event buffer,
and each client reads from there at its own pace. The model work runs in a
task next to a watcher of the grant's signal, so an owner's cancel, a lost
lease or the shutdown stops it at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from service.agent import AgentLoop, Transcript, TurnStatus
from service.auth import Principal
from service.commands import Commands
from service.config import Settings
from service.content import Message, TextBlock, Usage
from service.context import find_call, note_request_id
from service.errors import (
    AgentError,
    DeadlineExceeded,
    InvalidRequest,
    NotFound,
    RequestCancelled,
    ServiceUnavailable,
    StoreUnavailable,
    Unauthenticated,
)
from service.events import ChatEvent, Queued, Started, TurnInput, TurnResult
from service.history import estimate_text_tokens, estimate_tokens
from service.history_reader import HistoryReader
from service.limits import Admission as Budget
from service.limits import Limits
from service.observability.metrics import ServiceMetrics
from service.observability.tracing import Tracing
from service.pool import HostPool
from service.profiles import ProfileDirectory
from service.prompt import (
    PromptRules,
    prompt_window,
    request_for,
    system_prompt,
    without_unanswered,
)
from service.providers.base import AssistantTurn, CompletionRequest, Provider
from service.scheduler import Outcome, check_request
from service.scheduler.interface import (
    NO_SLOT,
    Admission,
    Adopted,
    Grant,
    RequestScheduler,
    RequestSpec,
    settle,
)
from service.store.base import ConversationStore, NewMessage
from service.store.rows import new_conversation_id
from service.summaries import Summarizer

log = logging.getLogger(__name__)

Send = Callable[[ChatEvent], Awaitable[None]]


async def discard(_event: ChatEvent) -> None:
    """A ``send`` for callers that want only the result."""


@dataclass(frozen=True, slots=True)
class AdmittedTurn:
    """A turn the scheduler has accepted, with what ``run`` needs to carry it out."""

    turn: TurnInput
    admission: Admission
    model: str
    conversation_id: str | None  # None: a command outside any conversation
    fresh: bool  # a new conversation: no history to read
    create: bool = False  # the turn's store write creates the conversation if it is missing
    # The limits' reservation of this turn's tokens (this process's; None when adopted
    # from another replica, whose reservation went with it).
    budget: Budget | None = None
    # Who sent it (None outside an RPC, or adopted): its token is checked again at its grant.
    caller: Principal | None = None

    @property
    def request_id(self) -> str:
        return self.admission.request_id

    @property
    def command(self) -> bool:
        return self.admission.provider == NO_SLOT


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
        still_valid: Callable[[Principal], bool] | None = None,
    ) -> None:
        self._settings = settings
        # Whether a caller's token still holds (Authenticator.still_valid); None: no check.
        self._still_valid = still_valid
        self._metrics = metrics or ServiceMetrics()
        self._tracing = tracing or Tracing()
        self._limits = limits or Limits(settings.limits, store)
        self._providers = providers
        self._default = default_provider
        self._store = store
        self._history = HistoryReader(store)
        self._scheduler = scheduler
        self._profiles = profiles
        self._agent = agent
        self._commands = Commands(store, profiles, self._limits)
        self._pools = pools or {}  # providers whose slots sit on several hosts
        self._rules = PromptRules(
            system_prompt=settings.api.system_prompt,
            max_tokens=settings.api.max_tokens,
            history_budget_tokens=settings.api.history_budget_tokens,
            history_watermark=settings.api.history_watermark,
        )
        self.summaries = Summarizer(
            settings.history,
            store=store,
            scheduler=scheduler,
            providers=providers,
            limits=self._limits,
            chunk_tokens=settings.api.history_budget_tokens,
            timeout_s=settings.api_server.request_timeout,
            pools=self._pools,
            metrics=self._metrics,
        )
        self._persisting: set[asyncio.Task[Any]] = set()
        self._workers: set[asyncio.Task[Grant]] = set()
        self._interrupted: str | None = None  # why running turns were stopped (shutdown)

    # --- entry points --------------------------------------------------------

    async def run_turn(self, turn: TurnInput, send: Send = discard) -> TurnResult:
        """Admit and run one turn: its events go to ``send``; the result is returned."""
        return await self.run(await self.admit(turn), send)

    async def admit(self, turn: TurnInput) -> AdmittedTurn:
        """Validate the turn, check the user's limits and submit it; refusals raise here.

        Nothing is written for a refused turn: no conversation, no spent rate.
        """
        if not turn.request_id:
            raise ValueError("a turn's request_id is minted at the edge")  # a wiring bug
        self._validate(turn)
        note_request_id(turn.request_id)
        if Commands.is_command(turn.message):
            return await self._admit_command(turn)
        provider = self._provider_for(turn)
        model = turn.model or provider.model
        budget: Budget | None = None
        try:
            conversation_id, fresh, create = await self._conversation_for(turn)
            # LimitReached (rate or budget); the turn's estimate is reserved until it ends.
            budget = await self._limits.admit(turn.user_id, await self._reservation(turn))
            admission = await self._scheduler.submit(
                RequestSpec(
                    request_id=turn.request_id,
                    user_id=turn.user_id,
                    provider=provider.name,
                    priority=turn.priority,
                    conversation_id=conversation_id,
                    model=model,
                    max_active=budget.limits.max_active,
                    payload=_payload(turn, conversation_id, fresh, create),
                )
            )
        except BaseException as exc:
            if budget is not None:  # refused after the limits let it in: it spends nothing
                await budget.refund()
            if isinstance(exc, AgentError):
                self._metrics.refused(provider.name, exc)
            raise
        call = find_call()
        caller = call.principal if call is not None else None
        return AdmittedTurn(turn, admission, model, conversation_id, fresh, create, budget, caller)

    def resume(self, adopted: Adopted) -> AdmittedTurn:
        """An admitted turn taken over from a replica that went away before it started.

        Its limits were checked when it was first admitted; ``run`` carries it out here.
        """
        data = json.loads(adopted.payload)
        turn = TurnInput(**data["turn"])
        admission = adopted.admission
        return AdmittedTurn(
            turn,
            admission,
            admission.model,
            data["conversation_id"],
            bool(data["fresh"]),
            bool(data["create"]),
        )

    async def run(self, admitted: AdmittedTurn, send: Send = discard) -> TurnResult:
        """Carry out an admitted turn; its events go to ``send``, errors are raised."""
        if admitted.command:
            return await self._command(admitted, send)
        turn, admission = admitted.turn, admitted.admission
        provider = self._providers[admission.provider]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.api_server.request_timeout
        timer = self._metrics.timed(provider.name, send)
        send = timer.send
        outcome: Outcome = "failed"
        error: AgentError | None = None
        result: TurnResult | None = None
        try:
            with self._tracing.span("queue wait", provider=provider.name):
                grant = await self._acquire(admission, deadline - loop.time(), send)
            self._check_caller(admitted)
            self._metrics.got_slot(provider.name, grant.waited_s)
            assert admitted.conversation_id is not None
            await send(
                Started(turn.request_id, admitted.conversation_id, provider.name, admitted.model)
            )
            result = await self._generate(admitted, grant, provider, deadline, send)
            outcome = "completed"
            return result
        except (RequestCancelled, asyncio.CancelledError):
            outcome = "cancelled" if self._interrupted is None else "failed"
            raise
        except AgentError as exc:
            error = exc  # kept with the record: a late re-attach learns the same error
            raise
        finally:
            finish = self._scheduler.finish(turn.request_id, turn.user_id, outcome, error)
            await settle(finish)
            timer.done()
            if admitted.budget is not None:  # the store has the real spend now
                await admitted.budget.settle(result.usage if result is not None else Usage())

    def _check_caller(self, admitted: AdmittedTurn) -> None:
        """Refuse to start a turn whose token was revoked while it waited.

        A revocation cancels the user's waiting requests (service.revocation), but
        one that authenticated just before the reload may enter the queue after that
        cancel listed them; checked here, at its grant, it cannot run either.
        """
        caller = admitted.caller
        if caller is None or self._still_valid is None or self._still_valid(caller):
            return
        raise Unauthenticated(
            f"the token of user {admitted.turn.user_id!r} was revoked while this request "
            "waited; sign in again and resend it"
        )

    async def _reservation(self, turn: TurnInput) -> int:
        """Tokens a turn reserves against the budgets: its input at most, plus its output cap.

        The input is everything a model call sends: the system prompt (configured and
        the user's profile), the tool schemas, the history budget and the message.
        """
        limits = self._limits.of(turn.user_id)
        if not (limits.tokens_per_day or limits.tokens_per_month):
            return 0  # no budget to reserve against (Limits.admit reserves nothing)
        profile = await self._profiles.load(turn.user_id)  # cached after the first turn
        system = estimate_text_tokens(system_prompt(self._rules.system_prompt, profile))
        message = estimate_tokens(Message("user", [TextBlock(turn.message)]))
        output = limits.cap_output(self._rules.max_tokens)
        summary = self._settings.history.summary_max_tokens if self.summaries.enabled else 0
        return (
            system
            + self._agent.tool_tokens()
            + message
            + self._rules.history_budget_tokens
            + summary
            + output
        )

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
        check_request(priority=turn.priority, request_id=turn.request_id)

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

    async def _conversation_for(self, turn: TurnInput) -> tuple[str, bool, bool]:
        """The conversation the turn continues: its id, whether it has no history, and
        whether the turn's store write must create it.

        Reads only: a new conversation is created with its first turn's messages. Until
        then it exists as the conversation of that turn in the scheduler, so a turn sent
        meanwhile (by id, or as the user's current conversation) joins it.
        """
        if turn.conversation_id:
            try:
                found = await self._store.get_conversation(turn.user_id, turn.conversation_id)
            except NotFound:
                if turn.conversation_id not in await self._unstored(turn.user_id):
                    raise
                return turn.conversation_id, False, True
            return found.id, False, False
        if not turn.new_conversation:
            unstored = await self._unstored(turn.user_id)
            if unstored:
                return unstored[-1], False, True  # the newest one is the current one
            current = await self._store.current_conversation(turn.user_id)
            if current is not None:
                return current.id, False, False
        return new_conversation_id(), True, True

    async def _unstored(self, user_id: str) -> list[str]:
        """Conversations of the user's active turns not in the store yet, oldest first."""
        active = await self._scheduler.requests(user_id)
        ids: dict[str, float] = {}
        for info in active:
            if info.conversation_id and info.conversation_id not in ids:
                ids[info.conversation_id] = info.enqueued_at or 0.0
        out = []
        for conversation_id, _ in sorted(ids.items(), key=lambda item: item[1]):
            try:
                await self._store.get_conversation(user_id, conversation_id)
            except NotFound:
                out.append(conversation_id)
        return out

    async def _admit_command(self, turn: TurnInput) -> AdmittedTurn:
        conversation_id: str | None = None
        if turn.conversation_id:
            found = await self._store.get_conversation(turn.user_id, turn.conversation_id)
            conversation_id = found.id
        elif not turn.new_conversation:
            current = await self._store.current_conversation(turn.user_id)
            conversation_id = current.id if current else None
        admission = await self._scheduler.submit(
            RequestSpec(
                request_id=turn.request_id,
                user_id=turn.user_id,
                provider=NO_SLOT,
                priority=turn.priority,
                conversation_id=conversation_id,
            )
        )
        return AdmittedTurn(turn, admission, "", conversation_id, False, False)

    async def _command(self, admitted: AdmittedTurn, send: Send) -> TurnResult:
        """Answer a slash command once the earlier turns of its conversation are done."""
        turn = admitted.turn
        outcome: Outcome = "failed"
        try:
            await self._acquire(admitted.admission, self._settings.api_server.request_timeout, send)
            conversation = None
            if admitted.conversation_id is not None:
                conversation = await self._store.get_conversation(
                    turn.user_id, admitted.conversation_id
                )
            reply = await self._commands.run(turn.user_id, turn.message, conversation)
            outcome = "completed"
        except (RequestCancelled, asyncio.CancelledError):
            outcome = "cancelled"
            raise
        finally:
            await settle(self._scheduler.finish(turn.request_id, turn.user_id, outcome))
        await send(Started(turn.request_id, reply.conversation_id, "command", ""))
        return TurnResult(
            reply.text, reply.conversation_id, turn.request_id, Usage(), "command", "", "command"
        )

    async def _acquire(self, admission: Admission, wait_s: float, send: Send) -> Grant:
        """Wait for the request's grant while its position is published as it moves."""
        if admission.granted:  # free at submit: nothing to wait for, no position to tell
            return await self._scheduler.acquire(admission, max(wait_s, 0.0))

        async def report_positions() -> None:
            interval = self._settings.queue.position_interval_s
            async for position in self._scheduler.positions(admission, interval):
                await send(Queued(admission.request_id, position.ahead, position.estimated_wait_s))

        # Both tasks only publish into the request's buffer: neither writes to a client.
        with _first_error():
            async with asyncio.TaskGroup() as group:
                watcher = group.create_task(report_positions())
                try:
                    return await self._scheduler.acquire(admission, max(wait_s, 0.0))
                finally:
                    watcher.cancel()
        raise AssertionError("unreachable")  # pragma: no cover

    async def _generate(
        self,
        admitted: AdmittedTurn,
        grant: Grant,
        provider: Provider,
        deadline: float,
        send: Send,
    ) -> TurnResult:
        turn, model = admitted.turn, admitted.model
        assert admitted.conversation_id is not None
        # A conversation this very turn creates has no history to read. The window
        # is cut in steps: read from where the last one started (HistoryReader).
        stored = (
            []
            if admitted.fresh
            else await self._history.read(turn.user_id, admitted.conversation_id)
        )
        stored = without_unanswered(stored)  # a failed turn's question is not asked again
        profile = await self._profiles.load(turn.user_id)
        user_message = Message("user", [TextBlock(turn.message)])
        history = [Message(m.role, m.content) for m in stored]
        window = prompt_window(
            self._rules, history, user_message, [m.estimated_tokens for m in stored]
        )
        self._history.remember(admitted.conversation_id, stored, history, window)
        # What the window cut off, summarized (history.summarize): never waited for.
        summary = await self.summaries.for_turn(
            turn.user_id, admitted.conversation_id, stored, history, window, provider.name, model
        )
        request = request_for(
            self._rules,
            window,
            profile=profile,
            max_tokens=self._limits.of(turn.user_id).cap_output(self._rules.max_tokens),
            model=model,
            user_id=turn.user_id,
            summary=summary,
        )
        transcript = Transcript(provider.name, model, turn.request_id)
        status: TurnStatus = "cancelled"
        try:
            try:
                stopped, grant = await self._model_work(
                    admitted.admission, provider, request, transcript, send, deadline, grant
                )
            except Exception as exc:
                status = "failed"
                self._metrics.provider_failed(provider.name, exc)
                raise
            finally:
                # The model call is over: the slot goes to the next request now, not
                # after the store write. The conversation stays held until finish.
                await settle(self._scheduler.release(grant))
            if stopped is None and grant.signal.kind == "fenced":
                # The lease was lost while the answer ran out (the release found it gone):
                # another replica already ended this request, so it is not complete here.
                stopped = grant.signal.error
            if stopped is not None:  # by its owner's cancel, a lost lease, or the shutdown
                if self._interrupted is not None:
                    status = "failed"
                    raise ServiceUnavailable(self._interrupted, retry_after_s=5.0)
                if stopped.code != RequestCancelled.code:
                    status = "failed"
                raise stopped
            status = "complete"
        finally:
            self._metrics.spent(provider.name, model, transcript.usage)
            await self._persist(admitted, transcript, user_message, status)
        return TurnResult(
            response=transcript.text,
            conversation_id=admitted.conversation_id,
            request_id=turn.request_id,
            usage=transcript.usage,
            provider=provider.name,
            model=model,
            stop_reason=transcript.stop_reason,
            tool_calls=tuple(transcript.tools),
        )

    async def _model_work(
        self,
        admission: Admission,
        provider: Provider,
        request: CompletionRequest,
        transcript: Transcript,
        send: Send,
        deadline: float,
        grant: Grant,
    ) -> tuple[AgentError | None, Grant]:
        """Run the agent loop until it ends or the grant's signal stops it.

        Returns the error the signal brought (None when the loop ended by itself)
        and the grant the work ended under (a pool may have moved it to another host).
        """
        worker = asyncio.create_task(
            self._work(admission, provider, request, transcript, send, deadline, grant),
            name=f"turn-{grant.request_id}",
        )
        self._workers.add(worker)
        worker.add_done_callback(self._workers.discard)
        undo = grant.signal.on_stop(worker.cancel)
        try:
            return None, await worker  # its error, if it failed
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the turn itself is being cancelled (its caller left)
            # The worker alone was stopped: by the grant's signal, or by the shutdown.
            error = grant.signal.error if grant.signal.is_stopped else None
            return error or RequestCancelled(f"request {grant.request_id} was cancelled"), grant
        finally:
            undo()

    async def _work(
        self,
        admission: Admission,
        provider: Provider,
        request: CompletionRequest,
        transcript: Transcript,
        send: Send,
        deadline: float,
        grant: Grant,
    ) -> Grant:
        async def attempt(bridge: Provider) -> None:
            transcript.live = AssistantTurn()  # a retry on another host starts afresh
            await self._agent.run(bridge, request, transcript, send)

        def sent() -> bool:
            return bool(transcript.text_parts or transcript.rounds or transcript.live.tool_calls)

        pool = self._pools.get(provider.name) if grant.backend else None
        try:
            async with asyncio.timeout_at(deadline):
                if pool is None:
                    await self._agent.run(provider, request, transcript, send)
                    return grant
                # the grant's host; another one if it fails before anything was sent
                return await pool.run(admission, grant, attempt, sent=sent, deadline=deadline)
        except TimeoutError:
            raise DeadlineExceeded(
                f"the request did not finish within request_timeout "
                f"({self._settings.api_server.request_timeout:g} s)"
            ) from None

    async def _persist(
        self,
        admitted: AdmittedTurn,
        transcript: Transcript,
        user_message: Message,
        status: TurnStatus,
    ) -> None:
        """Store the turn in one transaction, even when the caller is being cancelled."""
        assert admitted.conversation_id is not None
        rows = [
            NewMessage(
                role="user",
                content=user_message.content,
                status=status,
                request_id=transcript.request_id,
            ),
            *transcript.to_store(status),
        ]
        task = asyncio.create_task(
            self._store.append_messages(
                admitted.turn.user_id, admitted.conversation_id, rows, create=admitted.create
            )
        )
        self._persisting.add(task)
        task.add_done_callback(self._persisting.discard)
        try:
            await asyncio.shield(task)
        except StoreUnavailable:
            raise  # not stored (the store retried for a while): the caller must get the 503
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


def _payload(turn: TurnInput, conversation_id: str, fresh: bool, create: bool) -> str:
    """What another replica needs to run this turn (``ChatService.resume``), as JSON."""
    fields = {
        "user_id": turn.user_id,
        "message": turn.message,
        "conversation_id": turn.conversation_id,
        "new_conversation": turn.new_conversation,
        "priority": turn.priority,
        "provider": turn.provider,
        "model": turn.model,
        "request_id": turn.request_id,
    }
    return json.dumps(
        {"turn": fields, "conversation_id": conversation_id, "fresh": fresh, "create": create}
    )
