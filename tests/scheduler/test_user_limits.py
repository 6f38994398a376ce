"""The scheduler's part of the per-user limits: max_active at submit, and the operator's list."""

from __future__ import annotations

import pytest

from service.errors import Code, LimitReached
from service.scheduler import Scheduler


def test_max_active_counts_waiting_and_running_requests_of_that_user_only() -> None:
    sched = Scheduler(slots={"ollama": 1})
    running = sched.submit(user_id="alice", provider="ollama", max_active=2)
    sched.submit(user_id="alice", provider="ollama", max_active=2)
    with pytest.raises(LimitReached) as refused:
        sched.submit(user_id="alice", provider="ollama", max_active=2)
    assert refused.value.code is Code.RESOURCE_EXHAUSTED
    assert "max_active=2" in refused.value.message
    assert refused.value.retry_after_s is not None and refused.value.retry_after_s >= 1
    sched.submit(user_id="bob", provider="ollama", max_active=2)  # bob is not alice
    sched.submit(user_id="alice", provider="ollama")  # 0: no cap for this call

    sched.finish(running, "completed")
    sched.submit(user_id="carol", provider="ollama", max_active=1)
    with pytest.raises(LimitReached):
        sched.submit(user_id="carol", provider="ollama", max_active=1)


def test_requests_lists_running_then_waiting_by_position_with_the_model() -> None:
    sched = Scheduler(slots={"ollama": 1})
    first = sched.submit(user_id="alice", provider="ollama", model="llama3.2", request_id="r1")
    sched.submit(user_id="bob", provider="ollama", priority=5, request_id="r2")
    sched.submit(user_id="alice", provider="ollama", priority=1, request_id="r3")
    everyone = sched.requests(None)
    assert [(i.request_id, i.state, i.position) for i in everyone] == [
        ("r1", "running", -1),
        ("r3", "queued", 0),
        ("r2", "queued", 1),
    ]
    assert everyone[0].model == "llama3.2" and everyone[0].started_at is not None
    assert [i.request_id for i in sched.requests("alice")] == ["r1", "r3"]
    assert sched.requests("nobody") == []

    sched.cancel("r3", "alice")
    sched.finish(first, "completed")
    assert [i.request_id for i in sched.requests(None)] == ["r2"]  # ended ones are not listed
