"""Drive ``ChatService.run_turn`` as an async iterator of its events, for tests.

``run_turn`` sends events through an awaited callback and returns the result;
tests read them one at a time, as a client would, through a one-slot queue
(so the turn is at most one event ahead of the reader). ``aclose`` is the
client going away: it cancels the turn's task, as grpc.aio does on disconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid

from service.chat import ChatService
from service.events import ChatEvent, TurnInput

_END = object()


class TurnStream:
    """The events of one turn, then its TurnResult; its error is raised by ``__anext__``."""

    def __init__(self, chat: ChatService, turn: TurnInput) -> None:
        self._chat = chat
        # The RPC edge mints a request id for every turn; tests that do not care get one here.
        self._turn = (
            turn if turn.request_id else dataclasses.replace(turn, request_id=uuid.uuid4().hex)
        )
        self._events: asyncio.Queue[object] = asyncio.Queue(maxsize=1)
        self._task: asyncio.Task[None] | None = None

    def __aiter__(self) -> TurnStream:
        return self

    async def __anext__(self) -> ChatEvent:
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        item = await self._events.get()
        if item is _END:
            self._events.put_nowait(_END)  # stay ended
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._events.put_nowait(_END)
            raise item
        return item  # type: ignore[return-value]

    async def _run(self) -> None:
        try:
            result = await self._chat.run_turn(self._turn, self._events.put)
        except Exception as exc:
            await self._events.put(exc)
            return
        await self._events.put(result)
        await self._events.put(_END)

    async def aclose(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def stream(chat: ChatService, turn: TurnInput) -> TurnStream:
    return TurnStream(chat, turn)
