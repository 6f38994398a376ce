"""Turns of one conversation run one at a time, in arrival order.

A turn that arrives while another turn of the same conversation runs waits
here, before the scheduler's queue (taking a provider slot first would hold
the slot idle and could reorder the conversation's turns by priority). Such a
waiter is still visible to GetQueueStatus and can be cancelled by its owner,
so the queue stays honest about every request it has accepted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from service.errors import AgentError, Code, NotFound, RequestCancelled


@dataclass(slots=True)
class WaitingTurn:
    """A turn waiting for its conversation's previous turn to finish."""

    request_id: str
    user_id: str
    provider: str
    priority: int
    since: float = field(default_factory=time.time)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(slots=True)
class _Conversation:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0
    waiting: list[WaitingTurn] = field(default_factory=list)


class ConversationTurns:
    """Per-conversation FIFO locks whose waiters can be looked up and cancelled."""

    def __init__(self) -> None:
        self._conversations: dict[str, _Conversation] = {}
        self._waiting: dict[str, tuple[_Conversation, WaitingTurn]] = {}

    @asynccontextmanager
    async def turn(self, conversation_id: str, turn: WaitingTurn) -> AsyncIterator[None]:
        """Hold the conversation for one turn; RequestCancelled if cancelled while waiting."""
        if turn.request_id in self._waiting:
            raise AgentError(
                f"request_id {turn.request_id!r} is already in use", code=Code.ALREADY_EXISTS
            )
        conv = self._conversations.setdefault(conversation_id, _Conversation())
        conv.users += 1
        try:
            if conv.lock.locked():
                self._waiting[turn.request_id] = (conv, turn)
                conv.waiting.append(turn)
                try:
                    await _acquire_unless(conv.lock, turn.cancelled)
                finally:
                    del self._waiting[turn.request_id]
                    conv.waiting.remove(turn)
            else:
                await conv.lock.acquire()  # free: returns without yielding to the loop
            try:
                yield
            finally:
                conv.lock.release()
        finally:
            conv.users -= 1
            if conv.users == 0:
                del self._conversations[conversation_id]

    def busy(self, conversation_id: str) -> int:
        """How many turns of this conversation are ahead of a newcomer (0: none)."""
        conv = self._conversations.get(conversation_id)
        if conv is None or not conv.lock.locked():
            return 0
        return 1 + len(conv.waiting)

    def find(self, request_id: str, user_id: str) -> tuple[WaitingTurn, int]:
        """A waiting turn of this user, and how many turns are ahead of it."""
        found = self._waiting.get(request_id)
        if found is None or found[1].user_id != user_id:
            raise NotFound(f"no request with id {request_id!r}")
        conv, turn = found
        return turn, 1 + conv.waiting.index(turn)

    def cancel(self, request_id: str, user_id: str) -> WaitingTurn:
        """Cancel a waiting turn of this user; it leaves at once with RequestCancelled."""
        turn, _ = self.find(request_id, user_id)
        turn.cancelled.set()
        return turn

    def __len__(self) -> int:
        return len(self._conversations)


async def _acquire_unless(lock: asyncio.Lock, cancelled: asyncio.Event) -> None:
    """Acquire ``lock`` unless ``cancelled`` is set first; never leaves the lock held on failure."""
    acquire = asyncio.ensure_future(lock.acquire())
    stop = asyncio.ensure_future(cancelled.wait())
    got = False
    try:
        await asyncio.wait({acquire, stop}, return_when=asyncio.FIRST_COMPLETED)
        got = acquire.done() and not acquire.cancelled() and acquire.exception() is None
    finally:
        stop.cancel()
        if not acquire.done():
            acquire.cancel()
            await asyncio.gather(acquire, return_exceptions=True)
        if not got and acquire.done() and not acquire.cancelled() and acquire.exception() is None:
            lock.release()  # acquired just as we were leaving
    if cancelled.is_set():
        if got:
            lock.release()
        raise RequestCancelled("the request was cancelled while waiting for its conversation")
