"""ConversationTurns: one turn per conversation at a time, visible and cancellable waiters."""

from __future__ import annotations

import asyncio

import pytest

from service.errors import AgentError, NotFound, RequestCancelled
from service.turns import ConversationTurns, WaitingTurn


def waiting(request_id: str, user: str = "u") -> WaitingTurn:
    return WaitingTurn(request_id, user, "ollama", 5)


async def test_turns_run_one_at_a_time_in_arrival_order() -> None:
    turns = ConversationTurns()
    order: list[str] = []

    async def run(name: str) -> None:
        async with turns.turn("c1", waiting(name)):
            order.append(f"{name} in")
            await asyncio.sleep(0.01)
            order.append(f"{name} out")

    await asyncio.gather(*(run(n) for n in ("a", "b", "c")))
    assert order == ["a in", "a out", "b in", "b out", "c in", "c out"]
    assert len(turns) == 0  # nothing left behind


async def test_other_conversations_do_not_wait() -> None:
    turns = ConversationTurns()
    async with turns.turn("c1", waiting("a")):
        assert turns.busy("c2") == 0
        async with turns.turn("c2", waiting("b")):
            assert turns.busy("c1") == 1


async def test_a_waiter_is_visible_to_its_owner_only_and_can_be_cancelled() -> None:
    turns = ConversationTurns()
    entered = asyncio.Event()
    release = asyncio.Event()

    async def first() -> None:
        async with turns.turn("c1", waiting("first")):
            entered.set()
            await release.wait()

    async def second() -> None:
        async with turns.turn("c1", waiting("second")):
            raise AssertionError("a cancelled waiter must never run")

    holder = asyncio.create_task(first())
    await entered.wait()
    blocked = asyncio.create_task(second())
    await asyncio.sleep(0)
    assert turns.busy("c1") == 2
    turn, ahead = turns.find("second", "u")
    assert turn.request_id == "second" and ahead == 1
    with pytest.raises(NotFound):
        turns.find("second", "someone-else")
    with pytest.raises(NotFound):
        turns.cancel("second", "someone-else")
    turns.cancel("second", "u")
    with pytest.raises(RequestCancelled):
        await blocked
    release.set()
    await holder
    assert len(turns) == 0


async def test_duplicate_waiting_request_id_is_refused() -> None:
    turns = ConversationTurns()
    async with turns.turn("c1", waiting("a")):
        blocked = asyncio.create_task(_enter(turns, "c1", "dup"))
        await asyncio.sleep(0)
        with pytest.raises(AgentError, match="already in use"):
            async with turns.turn("c1", waiting("dup")):
                pass
        turns.cancel("dup", "u")
        with pytest.raises(RequestCancelled):
            await blocked


async def test_a_waiter_whose_task_is_cancelled_leaves_the_lock_free() -> None:
    turns = ConversationTurns()
    async with turns.turn("c1", waiting("a")):
        blocked = asyncio.create_task(_enter(turns, "c1", "b"))
        await asyncio.sleep(0)
        blocked.cancel()
        with pytest.raises(asyncio.CancelledError):
            await blocked
    async with turns.turn("c1", waiting("c")):  # the lock is free again
        pass
    assert len(turns) == 0


async def _enter(turns: ConversationTurns, conversation: str, request_id: str) -> None:
    async with turns.turn(conversation, waiting(request_id)):
        pass
