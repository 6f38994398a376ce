"""The order rule for one user's own requests and a conversation's later turns, on both backends."""

from __future__ import annotations

from service.scheduler.interface import Admission, RequestScheduler, RequestSpec
from tests.scheduler.contract.conftest import Backend

BIG = {"max_pending": 1000, "max_pending_per_user": 1000}


async def submit(
    sched: RequestScheduler, user: str, rid: str, priority: int = 5, conversation: str | None = None
) -> Admission:
    return await sched.submit(
        RequestSpec(
            request_id=rid,
            user_id=user,
            provider="ollama",
            priority=priority,
            conversation_id=conversation,
        )
    )


async def positions(sched: RequestScheduler, who: dict[str, str]) -> dict[str, int | None]:
    return {rid: (await sched.status(rid, user)).position for rid, user in who.items()}


async def started_in_order(sched: RequestScheduler, first: str, who: dict[str, str]) -> list[str]:
    """Finish the running request again and again; the ids in the order they started."""
    order: list[str] = []
    current, owner = first, "x"
    for _ in who:
        await sched.finish(current, owner, "completed")
        (current,) = [i.request_id for i in await sched.requests() if i.state == "running"]
        owner = who[current]
        order.append(current)
    return order


async def test_a_users_urgent_request_goes_ahead_of_the_same_users_earlier_ones(
    backend: Backend,
) -> None:
    sched = await backend.make(slots={"ollama": 1}, **BIG)
    await submit(sched, "x", "blocker")
    who = {}
    for i in range(4):
        await submit(sched, "alice", f"a{i}")
        who[f"a{i}"] = "alice"
    await submit(sched, "alice", "urgent", priority=1)
    await submit(sched, "bob", "b0")
    who |= {"urgent": "alice", "b0": "bob"}
    assert await positions(sched, who) == {
        "urgent": 0,  # rule 3: the user's own requests go by priority first
        "b0": 1,  # rule 2: bob joins behind at most one of alice's requests
        "a0": 2,
        "a1": 3,
        "a2": 4,
        "a3": 5,
    }
    assert await started_in_order(sched, "blocker", who) == [
        "urgent",
        "b0",
        "a0",
        "a1",
        "a2",
        "a3",
    ]


async def test_a_later_turn_is_counted_behind_the_earlier_turn_it_waits_for(
    backend: Backend,
) -> None:
    sched = await backend.make(slots={"ollama": 1}, **BIG)
    await submit(sched, "x", "blocker")
    await submit(sched, "alice", "t1", priority=10, conversation="c")
    await submit(sched, "alice", "t2", priority=1, conversation="c")  # cannot start before t1
    await submit(sched, "bob", "o", priority=5)
    who = {"t1": "alice", "t2": "alice", "o": "bob"}
    assert await positions(sched, who) == {"o": 0, "t1": 1, "t2": 2}
    assert await started_in_order(sched, "blocker", who) == ["o", "t1", "t2"]
