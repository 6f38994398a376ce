"""The agent loop: call the model, run the tools it asks for, feed results back.

A ``Transcript`` records what the turn adds to the conversation while it runs,
so a cancelled or failed turn can still store exactly what the user saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from service.content import Block, Message, TextBlock, ToolResultBlock, ToolUseBlock, Usage
from service.events import ChatEvent, ToolCalled, ToolRecord, ToolReturned
from service.observability.tracing import Tracing
from service.providers.accumulate import accumulate
from service.providers.base import AssistantTurn, CompletionRequest, Provider, TextDelta
from service.store.base import NewMessage
from service.tools.registry import ToolRegistry

TurnStatus = Literal["complete", "cancelled", "failed"]
_LIMIT_TEXT = "not run: the tool round limit of this turn was reached"
_INTERRUPTED_TEXT = "not run: the turn ended before this tool ran"


@dataclass(slots=True)
class _Round:
    """One model call: its messages and usage."""

    assistant: list[Block]
    usage: Usage
    results: list[ToolResultBlock] = field(default_factory=list)


@dataclass(slots=True)
class Transcript:
    """What a turn adds to the conversation, complete or not."""

    provider: str
    model: str
    request_id: str
    rounds: list[_Round] = field(default_factory=list)
    live: AssistantTurn = field(default_factory=AssistantTurn)  # the model call in progress
    text_parts: list[str] = field(default_factory=list)  # every delta the user saw
    tools: list[ToolRecord] = field(default_factory=list)
    stop_reason: str = ""

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    @property
    def usage(self) -> Usage:
        total = self.live.usage
        for r in self.rounds:
            total = total + r.usage
        return total

    def close_round(self, results: list[ToolResultBlock] | None = None) -> None:
        blocks: list[Block] = []
        if self.live.text:
            blocks.append(TextBlock(self.live.text))
        blocks.extend(ToolUseBlock(c.id, c.name, c.arguments) for c in self.live.tool_calls)
        self.rounds.append(_Round(blocks, self.live.usage, list(results or [])))
        self.live = AssistantTurn()

    def to_store(self, status: TurnStatus) -> list[NewMessage]:
        """The assistant and tool-result messages to store; every tool_use gets a result."""
        if self.live.text or self.live.tool_calls or self.live.usage != Usage():
            self.close_round()
        out: list[NewMessage] = []
        for index, r in enumerate(self.rounds):
            if not r.assistant:
                continue
            last = index == len(self.rounds) - 1
            out.append(
                NewMessage(
                    role="assistant",
                    content=r.assistant,
                    status=status if last else "complete",
                    provider=self.provider,
                    model=self.model,
                    input_tokens=r.usage.input_tokens,
                    output_tokens=r.usage.output_tokens,
                    request_id=self.request_id,
                    cache_creation_input_tokens=r.usage.cache_creation_input_tokens,
                    cache_read_input_tokens=r.usage.cache_read_input_tokens,
                )
            )
            results = list(r.results)
            answered = {res.tool_use_id for res in results}
            for block in r.assistant:
                if isinstance(block, ToolUseBlock) and block.id not in answered:
                    text = _LIMIT_TEXT if status == "complete" else _INTERRUPTED_TEXT
                    results.append(ToolResultBlock(block.id, text, True, block.name))
            if results:
                out.append(
                    NewMessage(
                        role="user", content=results, status="complete", request_id=self.request_id
                    )
                )
        return out


class AgentLoop:
    """Runs model calls and tool rounds for one turn."""

    def __init__(
        self, tools: ToolRegistry, *, max_rounds: int, tracing: Tracing | None = None
    ) -> None:
        self._tools = tools
        self._max_rounds = max_rounds
        self._tracing = tracing or Tracing()

    def tool_tokens(self) -> int:
        """The estimated tokens of the tool schemas sent with each of its model calls."""
        return self._tools.estimated_tokens()

    async def run(
        self,
        provider: Provider,
        request: CompletionRequest,
        transcript: Transcript,
        emit: Callable[[ChatEvent], Awaitable[None]],
    ) -> None:
        """Run until the model answers without tools or the round limit is reached."""
        messages = list(request.messages)
        specs = self._tools.specs()
        for round_no in range(self._max_rounds + 1):
            call = dataclasses.replace(request, messages=messages, tools=specs)
            model = call.model or provider.model
            with self._tracing.span("provider call", provider=provider.name, model=model):
                # Closed here, not by a finalizer later: the upstream connection (and
                # with it the provider's slot) is released before this turn moves on.
                async with contextlib.aclosing(provider.stream(call)) as events:
                    async for event in events:
                        transcript.live = accumulate(transcript.live, event)
                        if isinstance(event, TextDelta):
                            transcript.text_parts.append(event.text)
                            await emit(event)
            turn = transcript.live
            transcript.stop_reason = turn.stop_reason or "other"
            if not turn.tool_calls or round_no == self._max_rounds:
                transcript.close_round()
                return
            for call_ in turn.tool_calls:
                await emit(ToolCalled(call_.id, call_.name, call_.arguments))
            results = await asyncio.gather(*(self._tools.run(c) for c in turn.tool_calls))
            for c, result in zip(turn.tool_calls, results, strict=True):
                transcript.tools.append(
                    ToolRecord(c.id, c.name, c.arguments, result.content, result.is_error)
                )
                await emit(ToolReturned(c.id, c.name, result.content, result.is_error))
            assistant_blocks: list[Block] = []
            if turn.text:
                assistant_blocks.append(TextBlock(turn.text))
            assistant_blocks.extend(
                ToolUseBlock(c.id, c.name, c.arguments) for c in turn.tool_calls
            )
            messages.append(Message("assistant", assistant_blocks))
            messages.append(Message("user", list(results)))
            transcript.close_round(list(results))
