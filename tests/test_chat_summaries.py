"""history.summarize through ChatService (SQLite, scheduler, Ollama bridge on the fake).

After a cut the dropped part is summarized in the background by a low-priority
request, charged to the user, and heads the prompts that follow; a summary that
is not ready never holds a turn back; with the setting off nothing changes.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from service.agent import AgentLoop
from service.chat import ChatService
from service.config import Settings
from service.events import TurnInput
from service.pool import CircuitBreaker, HostPool
from service.profiles import ProfileDirectory
from service.prompt import SUMMARY_CLOSE, SUMMARY_OPEN
from service.providers.ollama import OllamaBridge
from service.scheduler import MAX_PRIORITY, Host, Scheduler
from service.scheduler.memory import MemoryScheduler
from service.store import ConversationStore
from service.summaries import SUMMARY_USER
from service.tools import default_registry
from tests.fakes.ollama import FakeOllama
from tests.fakes.script import Reply
from tests.fakes.server import RecordedRequest

INSTRUCTION = "Summarize this conversation for the test."
SUMMARY = "Alice asked numbered questions."


def is_summary(request: RecordedRequest) -> bool:
    return request.json["messages"][0] == {"role": "system", "content": INSTRUCTION}


def summary_calls(fake: FakeOllama) -> list[RecordedRequest]:
    return [c for c in fake.chats if is_summary(c)]


def turn_calls(fake: FakeOllama) -> list[RecordedRequest]:
    return [c for c in fake.chats if not is_summary(c)]


def first_user_text(call: RecordedRequest) -> str:
    return str(call.json["messages"][1]["content"])


def answering(fake: FakeOllama, summary: Callable[[int], Reply]) -> None:
    """Summary requests get ``summary(n)`` (n counts them from 1), turns the usual echo."""
    count = 0

    def respond(request: RecordedRequest) -> Reply:
        nonlocal count
        if not is_summary(request):
            return fake.echo(request)
        count += 1
        return summary(count)

    fake.responder = respond


@asynccontextmanager
async def service(
    fake: FakeOllama,
    store: ConversationStore,
    *,
    summarize: bool = True,
    slots: int = 1,
    **extra: Any,
) -> AsyncIterator[tuple[ChatService, MemoryScheduler]]:
    # ~50 estimated tokens a turn: over the 600-token budget by turn 12, cut to 300.
    settings = Settings(
        api={"history_budget_tokens": 600, "history_watermark": 0.5},
        history={"summarize": summarize, "summary_max_tokens": 64, "summary_prompt": INSTRUCTION},
        **extra,
    )
    bridge = OllamaBridge(url=fake.url, model="llama3.2")
    scheduler = MemoryScheduler(Scheduler(slots={"ollama": slots}))
    chat = ChatService(
        settings,
        providers={"ollama": bridge},
        default_provider="ollama",
        store=store,
        scheduler=scheduler,
        profiles=ProfileDirectory(None),
        agent=AgentLoop(default_registry(), max_rounds=1),
    )
    try:
        yield chat, scheduler
    finally:
        await chat.summaries.close()
        await bridge.aclose()


class Conversation:
    """One user's conversation, a numbered turn at a time."""

    def __init__(self, chat: ChatService) -> None:
        self.chat = chat
        self.id = ""
        self.turns = 0

    async def say(self, message: str | None = None) -> str:
        number = self.turns
        self.turns += 1
        turn = TurnInput(
            user_id="alice",
            message=message or f"question {number} " + "words " * 12,
            conversation_id=self.id,
            new_conversation=not self.id,
            request_id=f"turn-{number}",
        )
        async with asyncio.timeout(20):  # a turn never waits for a summary
            result = await self.chat.run_turn(turn)
        self.id = result.conversation_id
        return result.response


async def until_summarized(fake: FakeOllama, talk: Conversation) -> None:
    """Turns until one has cut the window and its summary job has ended."""
    for _ in range(30):
        await talk.say()
        await talk.chat.summaries.wait_idle()
        if summary_calls(fake):
            return
    raise AssertionError("no summary request in 30 turns")


async def until_a_summary_is_held(fake: FakeOllama, talk: Conversation) -> None:
    """Turns until one has started a summary job, then until the fake holds its request."""
    for _ in range(30):
        await talk.say()
        if talk.chat.summaries.running:  # its reply is gated: it cannot have ended
            assert await fake.wait_until(lambda: len(summary_calls(fake)) == 1)
            return
    raise AssertionError("no summary job in 30 turns")


async def test_after_a_cut_the_dropped_part_is_summarized_and_heads_the_next_prompts(
    fake: FakeOllama, store: ConversationStore
) -> None:
    answering(fake, lambda n: Reply.text("Alice asked ", "numbered questions."))
    async with service(fake, store) as (chat, _):
        talk = Conversation(chat)
        await until_summarized(fake, talk)
        cut = turn_calls(fake)[-1]  # the turn whose window was cut asked for it

        # The request: the configured instruction, then the dropped turns as a transcript.
        [request] = summary_calls(fake)
        assert request.json["model"] == "llama3.2"
        [_, ask] = request.json["messages"]
        assert ask["role"] == "user" and "User: question 0 words" in ask["content"]
        assert "Assistant: echo: question 0" in ask["content"]
        assert "tools" not in request.json or not request.json["tools"]

        # Kept with the conversation, covering every message before the cut window.
        messages = await store.messages("alice", talk.id)
        start = next(i for i, m in enumerate(messages) if m.content[0].text == first_user_text(cut))  # type: ignore[union-attr]
        summary = await store.get_summary("alice", talk.id)
        assert summary is not None and summary.text == SUMMARY
        assert summary.covered_up_to == messages[start - 1].id
        assert f"question {start // 2 - 1} " in ask["content"]
        assert f"question {start // 2} " not in ask["content"]
        # Not a message of the conversation.
        assert all(SUMMARY not in str(m.content) for m in messages)

        # The next turns begin with it, the same way each time until the next cut.
        for _ in range(3):
            await talk.say()
            head = first_user_text(turn_calls(fake)[-1])
            assert head.startswith(f"{SUMMARY_OPEN}{SUMMARY}{SUMMARY_CLOSE}question ")
        before, after = (c.json["messages"] for c in turn_calls(fake)[-2:])
        assert after[: len(before)] == before

        # Charged to Alice like a turn, but not counted as one.
        messages = await store.messages("alice", talk.id)
        answers = [m for m in messages if m.role == "assistant"]
        totals = await store.usage_totals("alice")
        assert summary.input_tokens > 0 and summary.output_tokens > 0
        assert totals.input_tokens == sum(m.input_tokens for m in answers) + summary.input_tokens
        assert totals.output_tokens == sum(m.output_tokens for m in answers) + summary.output_tokens
        assert totals.turns == talk.turns == len(answers)


async def test_a_later_cut_folds_the_summary_so_far_into_the_next(
    fake: FakeOllama, store: ConversationStore
) -> None:
    answering(fake, lambda n: Reply.text(f"summary {n}"))
    async with service(fake, store) as (chat, _):
        talk = Conversation(chat)
        while len(summary_calls(fake)) < 2 and talk.turns < 60:
            await talk.say()
            await chat.summaries.wait_idle()
        first, second = summary_calls(fake)[:2]
        assert "The summary so far" not in first.json["messages"][1]["content"]
        assert second.json["messages"][1]["content"].startswith("The summary so far:\nsummary 1")
        await talk.say()
        assert first_user_text(turn_calls(fake)[-1]).startswith(f"{SUMMARY_OPEN}summary 2")


async def test_a_summary_that_is_not_ready_holds_no_turn_back(
    fake: FakeOllama, store: ConversationStore
) -> None:
    gate = threading.Event()
    answering(fake, lambda n: Reply.text("late ", "summary", gate=gate, gate_after=1))
    # max_active 1: a running summary must not count against the user's own requests.
    async with service(fake, store, slots=2, limits={"max_active": 1}) as (chat, scheduler):
        talk = Conversation(chat)
        await until_a_summary_is_held(fake, talk)

        # The summary runs as a scheduler request of its own, at the lowest priority.
        [running] = await scheduler.requests(SUMMARY_USER)
        assert (running.state, running.priority, running.provider) == (
            "running",
            MAX_PRIORITY,
            "ollama",
        )
        assert await scheduler.requests("alice") == []

        # Turns go on with the plain cut while it is held open upstream.
        for _ in range(2):
            await talk.say()
            assert SUMMARY_OPEN not in first_user_text(turn_calls(fake)[-1])
        assert len(summary_calls(fake)) == 1  # one job per conversation

        gate.set()
        await chat.summaries.wait_idle()
        await talk.say()
        assert first_user_text(turn_calls(fake)[-1]).startswith(f"{SUMMARY_OPEN}late summary")


async def test_with_summaries_off_nothing_changes(
    fake: FakeOllama, store: ConversationStore
) -> None:
    answering(fake, lambda n: Reply.text(SUMMARY))
    async with service(fake, store, summarize=False) as (chat, _):
        talk = Conversation(chat)
        for _ in range(30):  # several cuts
            await talk.say()
        await chat.summaries.wait_idle()
        assert summary_calls(fake) == []
        assert await store.get_summary("alice", talk.id) is None
        assert all(SUMMARY_OPEN not in first_user_text(c) for c in fake.chats)
        prompts = [c.json["messages"] for c in fake.chats]
        assert any(len(q) < len(p) for p, q in itertools.pairwise(prompts))  # a cut


async def test_a_failed_summary_is_tried_again_at_the_next_turn(
    fake: FakeOllama, store: ConversationStore
) -> None:
    answering(fake, lambda n: Reply.error(500) if n == 1 else Reply.text(SUMMARY))
    async with service(fake, store) as (chat, _):
        talk = Conversation(chat)
        await until_summarized(fake, talk)
        assert await store.get_summary("alice", talk.id) is None  # the provider failed

        await talk.say()  # no new cut: the job is retried all the same
        assert SUMMARY_OPEN not in first_user_text(turn_calls(fake)[-1])
        await chat.summaries.wait_idle()
        assert len(summary_calls(fake)) == 2
        summary = await store.get_summary("alice", talk.id)
        assert summary is not None and summary.text == SUMMARY


async def test_an_empty_summary_is_charged_but_stands_for_nothing(
    fake: FakeOllama, store: ConversationStore
) -> None:
    answering(fake, lambda n: Reply.text(" ") if n == 1 else Reply.text(SUMMARY))
    async with service(fake, store) as (chat, _):
        talk = Conversation(chat)
        await until_summarized(fake, talk)
        assert await store.get_summary("alice", talk.id) is None
        answers = [m for m in await store.messages("alice", talk.id) if m.role == "assistant"]
        totals = await store.usage_totals("alice")
        assert totals.input_tokens > sum(m.input_tokens for m in answers)  # paid for
        await talk.say()
        await chat.summaries.wait_idle()
        summary = await store.get_summary("alice", talk.id)
        assert summary is not None and summary.text == SUMMARY


async def test_clearing_the_conversation_drops_its_summary(
    fake: FakeOllama, store: ConversationStore
) -> None:
    answering(fake, lambda n: Reply.text(SUMMARY))
    async with service(fake, store) as (chat, _):
        talk = Conversation(chat)
        await until_summarized(fake, talk)
        assert await store.get_summary("alice", talk.id) is not None
        await talk.say("/clear")
        assert await store.get_summary("alice", talk.id) is None
        await talk.say()
        assert first_user_text(turn_calls(fake)[-1]).startswith("question ")


async def test_shutting_down_stops_a_summary_at_once_and_frees_its_slot(
    fake: FakeOllama, store: ConversationStore
) -> None:
    gate = threading.Event()  # never opened
    answering(fake, lambda n: Reply.text("never", gate=gate, gate_after=0))
    async with service(fake, store) as (chat, scheduler):
        talk = Conversation(chat)
        await until_a_summary_is_held(fake, talk)
        [running] = await scheduler.requests(SUMMARY_USER)
        await chat.summaries.close()
        assert await fake.disconnected(fake.requests.index(summary_calls(fake)[0]))
        info = await scheduler.status(running.request_id, SUMMARY_USER)
        assert info.state == "cancelled"
        assert (await scheduler.stats()).total_running == 0
        assert await store.get_summary("alice", talk.id) is None
        await talk.say()  # no new job once closed
        assert len(summary_calls(fake)) == 1


async def test_on_a_pool_a_summary_takes_a_host_slot_and_is_run_again_after_a_host_failure(
    fake: FakeOllama, store: ConversationStore
) -> None:
    """Ollama hosts as the service runs them (a pool, even of one): the grant names a host."""
    failed = threading.Event()  # the first summary request, on whichever host, fails

    def respond_on(host: FakeOllama) -> Callable[[RecordedRequest], Reply]:
        def respond(request: RecordedRequest) -> Reply:
            if not is_summary(request):
                return host.echo(request)
            if not failed.is_set():
                failed.set()
                return Reply.error(500, "model runner crashed")
            return Reply.text(SUMMARY)

        return respond

    async with FakeOllama() as other:
        fakes = {fake.url: fake, other.url: other}
        for host in fakes.values():
            host.responder = respond_on(host)
        bridges = {url: OllamaBridge(url=url, model="llama3.2") for url in fakes}
        engine = Scheduler(slots={}, hosts={"ollama": [Host(url, 1) for url in fakes]})
        scheduler = MemoryScheduler(engine)
        breaker = CircuitBreaker(scheduler, "ollama", trip_after=3, open_s=10.0)
        chat = ChatService(
            Settings(
                api={"history_budget_tokens": 600, "history_watermark": 0.5},
                history={
                    "summarize": True,
                    "summary_max_tokens": 64,
                    "summary_prompt": INSTRUCTION,
                },
            ),
            providers={"ollama": bridges[fake.url]},
            default_provider="ollama",
            store=store,
            scheduler=scheduler,
            profiles=ProfileDirectory(None),
            agent=AgentLoop(default_registry(), max_rounds=1),
            pools={
                "ollama": HostPool(scheduler, "ollama", bridges, retry_after_s=1.0, breaker=breaker)
            },
        )
        try:
            talk = Conversation(chat)
            for _ in range(30):
                await talk.say()
                await chat.summaries.wait_idle()
                if failed.is_set():
                    break
            calls = [c for host in fakes.values() for c in summary_calls(host)]
            assert len(calls) == 2  # failed once, then ran again (on a host that was free)
            # One slot per host: never two calls at once on a host, summaries included.
            assert fake.max_in_flight == other.max_in_flight == 1
            summary = await store.get_summary("alice", talk.id)
            assert summary is not None and summary.text == SUMMARY
            assert (await scheduler.stats()).total_running == 0
        finally:
            await chat.summaries.close()
            for bridge in bridges.values():
                await bridge.aclose()
