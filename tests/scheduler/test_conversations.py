"""Turns of one conversation in the scheduler: a dispatch rule, not a second queue.

A turn whose conversation has an earlier turn waiting or running is not
eligible for a slot; it is still an ordinary entry: it counts against the
caps, has a position, and can be looked up and cancelled.
"""

from __future__ import annotations

import pytest

from service.errors import AgentError, Code, NotFound, QueueFull, RequestCancelled
from service.scheduler import COMMANDS, Scheduler


def test_a_later_turn_waits_for_the_running_one_even_with_free_slots() -> None:
    sched = Scheduler(slots={"ollama": 2})
    first = sched.submit(user_id="u", provider="ollama", conversation_id="c")
    second = sched.submit(user_id="u", provider="ollama", conversation_id="c")
    other = sched.submit(user_id="u", provider="ollama", conversation_id="d")
    assert first.holds_slot and other.holds_slot
    assert second.state == "queued" and sched.position(second) == 0
    assert sched.stats().total_waiting == 1

    sched.finish(first, "completed")
    assert second.holds_slot  # handed the slot as soon as its turn came


def test_a_blocked_turn_does_not_hold_back_other_requests() -> None:
    sched = Scheduler(slots={"ollama": 2})
    running = sched.submit(user_id="u", provider="ollama", conversation_id="c")
    blocked = sched.submit(user_id="u", provider="ollama", conversation_id="c", priority=1)
    stranger = sched.submit(user_id="v", provider="ollama", priority=9)
    assert running.holds_slot and stranger.holds_slot and blocked.state == "queued"


def test_turns_of_a_conversation_run_in_submission_order_whatever_their_priority() -> None:
    sched = Scheduler(slots={"ollama": 1})
    running = sched.submit(user_id="u", provider="ollama", conversation_id="c")
    later = [
        sched.submit(user_id="u", provider="ollama", conversation_id="c", priority=p)
        for p in (9, 5, 1)
    ]
    assert [sched.position(t) for t in later] == [0, 1, 2]
    order = []
    current = running
    for _ in later:
        sched.finish(current, "completed")
        current = next(t for t in later if t.holds_slot)
        order.append(current)
    assert order == later


def test_waiting_turns_of_a_conversation_count_against_the_per_user_cap() -> None:
    sched = Scheduler(slots={"ollama": 4}, max_pending_per_user=2)
    sched.submit(user_id="u", provider="ollama", conversation_id="c")  # runs: not counted
    for _ in range(2):
        sched.submit(user_id="u", provider="ollama", conversation_id="c")
    with pytest.raises(QueueFull, match="max_pending_per_user") as refused:
        sched.submit(user_id="u", provider="ollama", conversation_id="c")
    assert refused.value.retry_after_s is not None and refused.value.retry_after_s >= 1
    # Another conversation with a free slot runs at once, so it never waits.
    assert sched.submit(user_id="u", provider="ollama", conversation_id="e").holds_slot


async def test_cancelling_a_blocked_turn_lets_the_next_one_keep_the_order() -> None:
    sched = Scheduler(slots={"ollama": 1})
    running = sched.submit(user_id="u", provider="ollama", conversation_id="c")
    blocked = sched.submit(user_id="u", provider="ollama", conversation_id="c", request_id="b")
    last = sched.submit(user_id="u", provider="ollama", conversation_id="c")
    with pytest.raises(NotFound):
        sched.status("b", "intruder")
    assert sched.cancel("b", "u").state == "cancelled"
    with pytest.raises(RequestCancelled):
        await sched.acquire(blocked)
    assert sched.position(last) == 0
    sched.finish(running, "completed")
    assert last.holds_slot


def test_a_cancelled_running_turn_holds_back_the_next_until_it_is_finished() -> None:
    # The worker stores the partial turn before it calls finish; the next turn
    # must read that history, so it waits for finish, not for the cancel.
    sched = Scheduler(slots={"ollama": 2})
    running = sched.submit(user_id="u", provider="ollama", conversation_id="c", request_id="r")
    following = sched.submit(user_id="u", provider="ollama", conversation_id="c")
    sched.cancel("r", "u")
    assert following.state == "queued"
    sched.finish(running, "cancelled")
    assert following.holds_slot


def test_commands_wait_for_their_conversation_and_stay_out_of_the_provider_figures() -> None:
    sched = Scheduler(slots={"ollama": 1})
    turn = sched.submit(user_id="u", provider="ollama", conversation_id="c")
    command = sched.submit(user_id="u", provider=COMMANDS, conversation_id="c")
    free_command = sched.submit(user_id="u", provider=COMMANDS)
    assert command.state == "queued" and free_command.holds_slot
    assert set(sched.stats().providers) == {"ollama"}
    with pytest.raises(KeyError):  # no lane of slots stands in for a conversation lock
        sched.hosts(COMMANDS)
    assert sched.status(command.request_id, "u").position == 1  # one turn ahead of it
    sched.finish(turn, "completed")
    assert command.holds_slot


def test_request_ids_live_in_their_users_namespace() -> None:
    sched = Scheduler(slots={"ollama": 2})
    sched.submit(user_id="alice", provider="ollama", request_id="same")
    # Another user's id behaves exactly like an unused one: no oracle, no squatting.
    bob = sched.submit(user_id="bob", provider="ollama", request_id="same")
    assert sched.status("same", "bob").user_id == "bob" and bob.holds_slot
    with pytest.raises(AgentError) as reused:
        sched.submit(user_id="alice", provider="ollama", request_id="same")
    assert reused.value.code is Code.ALREADY_EXISTS


@pytest.mark.parametrize("bad", ["abc\n", "", "a" * 65, "a b", "é"])
def test_the_request_id_rule_is_checked_on_the_whole_id(bad: str) -> None:
    from service.errors import InvalidRequest
    from service.scheduler import check_request
    from service.scheduler.admission import is_request_id

    assert not is_request_id(bad)
    with pytest.raises(InvalidRequest, match="request_id"):
        check_request(priority=5, request_id=bad)
