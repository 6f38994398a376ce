"""The final assistant turn as a fold of a provider's events."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Iterable

from service.content import Usage
from service.providers.base import AssistantTurn, ProviderEvent, Stop, TextDelta, ToolCall


def accumulate(turn: AssistantTurn, event: ProviderEvent) -> AssistantTurn:
    """Fold one event into ``turn`` (in place) and return it.

    Raises ValueError on input no provider stream may produce: anything after
    Stop, or a tool call id seen twice.
    """
    if turn.stop_reason is not None:
        raise ValueError(f"{type(event).__name__} after Stop({turn.stop_reason})")
    if isinstance(event, TextDelta):
        turn.text_parts.append(event.text)
    elif isinstance(event, ToolCall):
        if any(call.id == event.id for call in turn.tool_calls):
            raise ValueError(f"tool call id {event.id!r} seen twice")
        turn.tool_calls.append(event)
    elif isinstance(event, Usage):
        # Usage is cumulative within a call: the latest report replaces the earlier one.
        turn.usage = event
    elif isinstance(event, Stop):
        turn.stop_reason = event.reason
    else:
        raise ValueError(f"not a provider event: {event!r}")
    return turn


def fold(events: Iterable[ProviderEvent]) -> AssistantTurn:
    """The turn a complete sequence of events describes."""
    turn = AssistantTurn()
    for event in events:
        accumulate(turn, event)
    return turn


async def afold(events: AsyncGenerator[ProviderEvent, None]) -> AssistantTurn:
    """``fold`` over a stream, e.g. ``await afold(provider.stream(request))``.

    The stream is closed before this returns or raises, never left to a finalizer.
    """
    turn = AssistantTurn()
    async with contextlib.aclosing(events) as stream:
        async for event in stream:
            accumulate(turn, event)
    return turn
