"""The shared position reads of a PostgreSQL replica (``pg_board.Board``), with a fake read."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from service.scheduler.pg_board import MISSING, Board, Figures, Key


class Reads:
    """A read that counts its calls and answers when released (one gate per call)."""

    def __init__(self) -> None:
        self.calls: list[list[Key]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.figures: dict[Key, Figures] = {}
        self.fail: BaseException | None = None

    async def __call__(self, keys: Sequence[Key]) -> dict[Key, Figures]:
        self.calls.append(list(keys))
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return {k: self.figures[k] for k in keys if k in self.figures}


A, B, C = ("u", "a"), ("u", "b"), ("u", "c")


@pytest.fixture
def reads() -> Reads:
    return Reads()


def board(reads: Reads, generation: list[int], max_age_s: float = 3600) -> Board:
    return Board(reads, lambda: generation[0], max_age_s)


async def test_lookers_of_one_change_share_one_read(reads: Reads) -> None:
    generation = [0]
    shared = board(reads, generation)
    reads.figures = {A: (0, 1.0), B: (1, 2.0)}
    reads.gate.clear()
    with shared.watching(A), shared.watching(B):
        looks = [asyncio.create_task(shared.look(k, 0)) for k in (A, B, A)]
        await asyncio.sleep(0)
        reads.gate.set()
        assert await asyncio.gather(*looks) == [(0, 1.0), (1, 2.0), (0, 1.0)]
        assert len(reads.calls) == 1 and sorted(reads.calls[0]) == [A, B]
        # The same change looked at again: no new read.
        assert await shared.look(B, 0) == (1, 2.0)
        assert len(reads.calls) == 1


async def test_a_later_change_reads_again(reads: Reads) -> None:
    generation = [0]
    shared = board(reads, generation)
    reads.figures = {A: (3, 30.0)}
    with shared.watching(A):
        assert await shared.look(A, 0) == (3, 30.0)
        generation[0] = 1
        reads.figures = {A: (2, 20.0)}
        assert await shared.look(A, 1) == (2, 20.0)
        assert len(reads.calls) == 2


async def test_a_read_in_flight_from_before_the_change_is_not_reused(reads: Reads) -> None:
    generation = [0]
    shared = board(reads, generation)
    reads.figures = {A: (3, 30.0)}
    reads.gate.clear()
    with shared.watching(A):
        early = asyncio.create_task(shared.look(A, 0))
        while not reads.calls:  # the read has started
            await asyncio.sleep(0)
        generation[0] = 1  # the queue changed while that read ran
        late = asyncio.create_task(shared.look(A, 1))
        await asyncio.sleep(0)
        reads.gate.set()
        await asyncio.gather(early, late)
        assert len(reads.calls) == 2


async def test_an_old_read_is_not_trusted_past_the_safety_poll(reads: Reads) -> None:
    shared = board(reads, [0], max_age_s=0.0)
    reads.figures = {A: (1, 1.0)}
    with shared.watching(A):
        await shared.look(A, 0)
        await shared.look(A, 0)
    assert len(reads.calls) == 2


async def test_a_request_no_longer_waiting_is_none_and_an_unread_one_missing(
    reads: Reads,
) -> None:
    shared = board(reads, [0])
    reads.figures = {A: (0, 0.0)}  # B was watched but is no longer waiting
    with shared.watching(A), shared.watching(B):
        assert await shared.look(B, 0) is None
        with shared.watching(C):  # came after the read: it reads its own figures
            assert await shared.look(C, 0) is MISSING
    assert not shared._watched  # every watch ended


async def test_one_looker_giving_up_does_not_cancel_the_others_read(reads: Reads) -> None:
    shared = board(reads, [0])
    reads.figures = {A: (4, 4.0)}
    reads.gate.clear()
    with shared.watching(A):
        leaving = asyncio.create_task(shared.look(A, 0))
        staying = asyncio.create_task(shared.look(A, 0))
        await asyncio.sleep(0)
        leaving.cancel()
        await asyncio.sleep(0)
        reads.gate.set()
        assert await staying == (4, 4.0)
        assert leaving.cancelled()
        assert len(reads.calls) == 1


async def test_a_failed_read_reaches_every_looker_and_the_next_look_reads_again(
    reads: Reads,
) -> None:
    shared = board(reads, [0])
    reads.fail = OSError("connection lost")
    with shared.watching(A):
        for _ in range(2):
            with pytest.raises(OSError):
                await shared.look(A, 0)
        reads.fail = None
        reads.figures = {A: (0, 0.0)}
        assert await shared.look(A, 0) == (0, 0.0)
    assert len(reads.calls) == 3


async def test_reads_are_spaced_by_the_minimum_gap_and_changes_in_between_share_one(
    reads: Reads,
) -> None:
    clock = asyncio.get_running_loop()
    generation = [0]
    shared = Board(reads, lambda: generation[0], 3600, min_gap_s=0.2)
    reads.figures = {A: (5, 5.0)}
    with shared.watching(A):
        await shared.look(A, 0)
        first = clock.time()
        # Three changes in quick succession: one read, after the gap, for all of them.
        looks = []
        for g in (1, 2, 3):
            generation[0] = g
            looks.append(asyncio.create_task(shared.look(A, g)))
            await asyncio.sleep(0)
        reads.figures = {A: (2, 2.0)}
        assert await asyncio.gather(*looks) == [(2, 2.0)] * 3
        assert len(reads.calls) <= 3  # never one per change and looker
        assert shared._snapshot is not None and shared._snapshot.generation == 3
        assert shared._snapshot.taken_at - first >= 0.2
