"""Dispatch over a pool of hosts, with an injected clock: routing, affinity, health, put-back."""

from __future__ import annotations

import pytest

from service.errors import InvalidRequest, ServiceUnavailable
from service.scheduler import Host, Scheduler, Ticket


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pool(*hosts: Host, clock: Clock | None = None, **kw: float) -> Scheduler:
    return Scheduler(
        slots={},
        hosts={"ollama": list(hosts)},
        clock=clock or Clock(),
        wall_clock=lambda: 5.0,
        max_pending=100,
        max_pending_per_user=100,
        **kw,  # type: ignore[arg-type]
    )


def submit(s: Scheduler, model: str = "m", conversation: str | None = None, **kw: object) -> Ticket:
    return s.submit(
        user_id=str(kw.get("user", "u")),
        provider="ollama",
        model=model,
        conversation_id=conversation,
        priority=int(kw.get("priority", 5)),  # type: ignore[call-overload]
    )


def test_two_hosts_with_one_slot_each_run_two_requests_at_once() -> None:
    s = pool(Host("a", 1), Host("b", 1))
    first, second, third = submit(s), submit(s, user="v"), submit(s, user="w")
    assert first.state == second.state == "running"
    assert {first.backend, second.backend} == {"a", "b"}
    assert third.state == "queued" and s.position(third) == 0
    s.finish(second, "completed")
    assert third.state == "running" and third.backend == second.backend


def test_requests_land_on_a_host_that_serves_their_model() -> None:
    s = pool(Host("a", 1, models=frozenset({"m1"})), Host("b", 1, models=frozenset({"m2"})))
    two = submit(s, "m2")
    one = submit(s, "m1:latest")
    assert (one.backend, two.backend) == ("a", "b")
    with pytest.raises(InvalidRequest, match=r"'m3'.*served models: m1, m2"):
        submit(s, "m3")


def test_no_request_waits_while_a_host_that_serves_its_model_is_free() -> None:
    s = pool(Host("a", 1, models=frozenset({"m1"})), Host("b", 1, models=frozenset({"m2"})))
    running = submit(s, "m1")
    blocked = submit(s, "m1", user="v")  # first in line, but only host a serves it
    later = submit(s, "m2", user="w")
    assert running.backend == "a" and blocked.state == "queued"
    assert later.state == "running" and later.backend == "b"
    # Positions count only the requests that compete for the same hosts.
    assert s.position(blocked) == 0


def test_a_conversation_goes_back_to_its_host_when_it_is_free_and_elsewhere_when_busy() -> None:
    s = pool(Host("a", 1), Host("b", 1))
    other = submit(s, user="v")  # takes host a
    first = submit(s, conversation="c")
    assert (other.backend, first.backend) == ("a", "b")
    s.finish(first, "completed")
    s.finish(other, "completed")
    second = submit(s, conversation="c")
    assert second.backend == "b"  # both free: back to the host of the first turn
    s.finish(second, "completed")
    hog = submit(s, user="v", conversation="hog")  # affinity-free: least loaded → a
    assert hog.backend == "a"
    blocker = submit(s, user="w")
    assert blocker.backend == "b"
    s.finish(hog, "completed")
    third = submit(s, conversation="c")
    assert third.backend == "a"  # its host is busy: no waiting for affinity


def test_a_host_with_the_model_loaded_wins_over_a_less_loaded_one() -> None:
    s = pool(Host("a", 2), Host("b", 2))
    s.report_host("ollama", "b", up=True, loaded=["m:latest"])
    assert submit(s).backend == "b"
    assert submit(s, "other").backend == "a"


def test_a_down_host_gets_no_work_and_its_running_requests_learn_of_it() -> None:
    s = pool(Host("a", 1), Host("b", 1))
    on_a, on_b = submit(s), submit(s, user="v")
    lost: list[str] = []
    on_a.on_host_lost = lambda: lost.append(on_a.request_id)
    waiting = submit(s, user="w")
    s.report_host("ollama", on_a.backend, up=False, error="connection refused")
    assert lost == [on_a.request_id] and on_a.host_lost and not on_b.host_lost
    # The worker puts it back (nothing sent yet): first in line, ahead of what waited.
    s.put_back(on_a)
    assert on_a.state == "queued" and s.position(on_a) == 0 and s.position(waiting) == 1
    s.finish(on_b, "completed")
    assert on_a.state == "running" and on_a.backend == on_b.backend and on_a.tried == ("a",)
    assert waiting.state == "queued"
    stats = s.stats().providers["ollama"]
    assert stats.slots == 1
    down = next(h for h in stats.hosts if h.name == "a")
    assert (down.up, down.last_error, down.since) == (False, "connection refused", 5.0)
    # Back up: it gets work again at once.
    s.report_host("ollama", "a", up=True)
    assert waiting.state == "running" and waiting.backend == "a"


def test_with_no_host_up_for_a_model_requests_fail_fast_with_a_retry_hint() -> None:
    s = pool(
        Host("a", 1, models=frozenset({"m1"})),
        Host("b", 1, models=frozenset({"m2"})),
        down_retry_s=3.0,
    )
    running = submit(s, "m1")
    waiting = submit(s, "m1", user="v")
    other = submit(s, "m2", user="w")
    s.report_host("ollama", "a", up=False, error="2 probes failed")
    assert waiting.state == "failed"
    failure = waiting.failure()
    assert isinstance(failure, ServiceUnavailable) and failure.retry_after_s == 3.0
    with pytest.raises(ServiceUnavailable, match="2 probes failed") as refused:
        submit(s, "m1")
    assert refused.value.retry_after_s == 3.0
    # Put back with no host left for its model: it ends instead of waiting.
    s.put_back(running)
    assert running.state == "failed" and not running.holds_slot
    assert other.state == "running"


def test_estimates_count_the_slots_of_the_healthy_hosts_of_the_model() -> None:
    clock = Clock()
    s = pool(Host("a", 1), Host("b", 1), clock=clock, default_service_s=10.0)
    submit(s), submit(s, user="v")
    waiting = submit(s, user="w")
    assert s.status(waiting.request_id, "w").estimated_wait_s == pytest.approx(10.0)
    clock.now += 4.0
    assert s.status(waiting.request_id, "w").estimated_wait_s == pytest.approx(6.0)


def test_hosts_learn_the_models_they_serve() -> None:
    s = pool(Host("a", 1))
    s.report_host("ollama", "a", up=True, models=["m1:latest"])
    assert submit(s, "m1").backend == "a"
    with pytest.raises(InvalidRequest, match="served models: m1:latest"):
        submit(s, "m2")


def test_a_request_put_back_during_shutdown_ends_unavailable() -> None:
    s = pool(Host("a", 1), Host("b", 1))
    running = submit(s)
    s.begin_shutdown("shutting down")
    s.put_back(running)
    assert running.state == "failed" and not running.holds_slot
    assert isinstance(running.failure(), ServiceUnavailable)


def test_reports_that_change_nothing_wake_no_one() -> None:
    s = pool(Host("a", 1))
    lane = s._lanes["ollama"]
    before = lane.changed._event
    s.report_host("ollama", "a", up=True, loaded=["m:latest"])
    assert lane.changed._event is before  # nothing fired
    assert s.hosts("ollama")[0].loaded == {"m:latest"}
