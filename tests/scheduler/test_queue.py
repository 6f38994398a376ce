"""The dispatch order policy on its own: priority, users taking turns, aging."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from service.scheduler.queue import AGING_STEPS, DispatchQueue


@dataclass(frozen=True, eq=False)
class Req:
    user_id: str
    priority: int
    enqueued_mono: float
    seq: int
    label: str
    group: str | None = None


class Requests:
    """Makes requests with increasing sequence numbers, as the scheduler does."""

    def __init__(self) -> None:
        self._seq = itertools.count()

    def __call__(
        self, user: str, priority: int, at: float = 0.0, label: str = "", group: str | None = None
    ) -> Req:
        return Req(user, priority, at, next(self._seq), label, group)


@pytest.fixture
def make() -> Requests:
    return Requests()


def labels(q: DispatchQueue[Req], now: float = 0.0) -> list[str]:
    return [r.label for r in q.order(now)]


def drain(q: DispatchQueue[Req], now: float = 0.0) -> list[str]:
    out = []
    while len(q):
        out.append(q.pop_next(now).label)
    return out


def test_lower_priority_number_goes_first_then_submission_order(make: Requests) -> None:
    q: DispatchQueue[Req] = DispatchQueue(30.0)
    for label, prio in [("a5", 5), ("b1", 1), ("c10", 10), ("d1", 1), ("e3", 3)]:
        q.add(make("u", prio, label=label))
    assert labels(q) == ["b1", "d1", "e3", "a5", "c10"]
    assert drain(q) == ["b1", "d1", "e3", "a5", "c10"]


def test_users_take_turns_within_a_priority(make: Requests) -> None:
    q: DispatchQueue[Req] = DispatchQueue(30.0)
    for i in range(4):
        q.add(make("alice", 5, label=f"a{i}"))
    q.add(make("bob", 5, label="b0"))
    q.add(make("carol", 5, label="c0"))
    q.add(make("bob", 5, label="b1"))
    assert labels(q) == ["a0", "b0", "c0", "a1", "b1", "a2", "a3"]


def test_priority_beats_turn_taking(make: Requests) -> None:
    q: DispatchQueue[Req] = DispatchQueue(30.0)
    for i in range(3):
        q.add(make("alice", 1, label=f"a{i}"))
    q.add(make("bob", 2, label="b"))
    assert labels(q) == ["a0", "a1", "a2", "b"]


def test_newcomer_goes_ahead_of_the_user_just_served_only(make: Requests) -> None:
    q: DispatchQueue[Req] = DispatchQueue(30.0)
    for i in range(5):
        q.add(make("alice", 5, label=f"a{i}"))
    q.add(make("bob", 5, label="b0"))
    assert q.pop_next(0.0).label == "a0"
    assert q.pop_next(0.0).label == "b0"
    # carol arrives after bob's turn: alice (served before bob) is owed a turn first.
    q.add(make("carol", 5, label="c0"))
    assert labels(q) == ["a1", "c0", "a2", "a3", "a4"]


@pytest.mark.parametrize("served_before", [0, 7])
def test_popping_follows_the_predicted_order(make: Requests, served_before: int) -> None:
    q: DispatchQueue[Req] = DispatchQueue(30.0)
    users = ["u1", "u2", "u3"]
    for i in range(30):
        q.add(make(users[i % 3 if i % 4 else 0], 1 + (i * 7) % 10, at=i * 5.0, label=f"r{i}"))
    for k in range(served_before):  # earlier turns at various times shape the rotation
        q.pop_next(150.0 + 13.0 * k)
    predicted = labels(q, 400.0)
    assert drain(q, 400.0) == predicted
    assert len(predicted) == 30 - served_before


def test_positions_match_the_order(make: Requests) -> None:
    q: DispatchQueue[Req] = DispatchQueue(30.0)
    reqs = [make(u, p, label=f"{u}{p}") for u, p in [("a", 3), ("b", 1), ("a", 1)]]
    for r in reqs:
        q.add(r)
    order = list(q.order(0.0))
    assert [q.position(r, 0.0) for r in order] == [0, 1, 2]
    q.remove(order[0])
    assert [q.position(r, 0.0) for r in order[1:]] == [0, 1]


def test_aging_lifts_one_level_per_interval_down_to_one(make: Requests) -> None:
    q: DispatchQueue[Req] = DispatchQueue(30.0)
    old = make("a", 10, at=0.0, label="old")
    q.add(old)
    assert q.level(old, 0.0) == 10
    assert q.level(old, 29.9) == 10
    assert q.level(old, 30.0) == 9
    assert q.level(old, 269.9) == 2
    assert q.level(old, 270.0) == 1
    assert q.level(old, 10_000.0) == 1


def test_aged_request_overtakes_newer_urgent_ones(make: Requests) -> None:
    q: DispatchQueue[Req] = DispatchQueue(30.0)
    q.add(make("low", 10, at=0.0, label="low"))
    q.add(make("high", 3, at=100.0, label="high"))
    assert labels(q, 100.0) == ["high", "low"]  # levels 3 and 7
    assert labels(q, 269.0) == ["high", "low"]  # levels 1 and 2
    # Both at level 1: low has waited longer for a turn (it arrived first).
    assert labels(q, 270.0) == ["low", "high"]


def test_reorder_time_is_the_next_aging_step(make: Requests) -> None:
    q: DispatchQueue[Req] = DispatchQueue(30.0)
    assert q.reorder_at(0.0) is None
    q.add(make("a", 3, at=5.0, label="x"))
    assert q.reorder_at(10.0) == pytest.approx(35.0)
    assert q.reorder_at(40.0) == pytest.approx(65.0)
    assert q.reorder_at(70.0) is None  # already at level 1


def test_a_burst_does_not_age_as_a_block(make: Requests) -> None:
    """Aging counts from the user's last turn, so a late arrival is not stuck behind a burst."""
    q: DispatchQueue[Req] = DispatchQueue(30.0)
    for i in range(10):
        q.add(make("alice", 5, at=0.0, label=f"a{i}"))
    t = 0.0
    served = [q.pop_next(t).label]
    for _ in range(3):  # one of alice's requests every 20 s
        t += 20.0
        served.append(q.pop_next(t).label)
    q.add(make("bob", 5, at=t + 1, label="b0"))
    t += 20.0
    assert q.pop_next(t).label == "b0"
    assert served == ["a0", "a1", "a2", "a3"]


def test_aging_can_be_disabled(make: Requests) -> None:
    q: DispatchQueue[Req] = DispatchQueue(math.inf)
    q.add(make("a", 10, at=0.0, label="low"))
    q.add(make("b", 1, at=1e6, label="high"))
    assert labels(q, 1e6) == ["high", "low"]
    assert q.reorder_at(1e6) is None


def test_rejects_a_non_positive_aging_interval() -> None:
    with pytest.raises(ValueError):
        DispatchQueue(0.0)


def test_a_group_keeps_submission_order_whatever_the_priorities(make: Requests) -> None:
    q: DispatchQueue[Req] = DispatchQueue(aging_interval_s=math.inf)
    q.add(make("u", 9, label="c-first", group="c"))
    q.add(make("u", 1, label="c-urgent", group="c"))
    q.add(make("u", 5, label="loose"))
    q.add(make("v", 5, label="v"))
    # c-urgent may not pass c-first, but it ranks by its own priority once c-first is out.
    assert labels(q) == ["loose", "v", "c-first", "c-urgent"]
    assert q.position(next(r for r in q if r.label == "c-urgent"), 0.0) == 3


def test_pop_next_skips_requests_that_are_not_eligible(make: Requests) -> None:
    q: DispatchQueue[Req] = DispatchQueue(aging_interval_s=math.inf)
    blocked = make("u", 1, label="blocked", group="c")
    q.add(blocked)
    q.add(make("v", 5, label="free"))
    first = q.pop_next(0.0, lambda r: r is not blocked)
    assert first is not None and first.label == "free"
    assert q.pop_next(0.0, lambda r: r is not blocked) is None
    assert labels(q) == ["blocked"]  # it kept its place


class Rule:
    """The dispatch rule replayed from scratch at every question: what the queue must match.

    Slow and plain on purpose (no ranked order kept, no pending requests): each
    answer picks the minimum by the module's rules over a copy of the state.
    """

    def __init__(self, aging_interval_s: float) -> None:
        self.interval = aging_interval_s
        self.step = aging_interval_s / AGING_STEPS
        self.waiting: dict[str, list[Req]] = {}
        self.turn: dict[str, int] = {}
        self.last_turn_at: dict[str, float] = {}
        self.front: list[Req] = []
        self.stamp = 0
        self.last_served: str | None = None

    def add(self, r: Req) -> None:
        if r.user_id not in self.waiting:
            self.waiting[r.user_id] = []
            self.turn[r.user_id] = self.stamp - (r.user_id != self.last_served)
            self.last_turn_at.setdefault(r.user_id, -math.inf)
        self.waiting[r.user_id].append(r)

    def level(self, r: Req, last: float, now: float) -> int:
        since = math.ceil(max(r.enqueued_mono, last) / self.step) * self.step
        return max(1, r.priority - math.floor(max(now - since, 0.0) / self.interval))

    def order(self, now: float) -> list[Req]:
        waiting = {u: list(rs) for u, rs in self.waiting.items()}
        turn, last = dict(self.turn), dict(self.last_turn_at)
        stamp, out = self.stamp, list(self.front)
        while waiting:
            best = None
            for user, rs in waiting.items():
                for r in rs:
                    if r.group is not None and any(
                        o.group == r.group and o.seq < r.seq for o in rs
                    ):
                        continue  # an earlier turn of its group waits
                    key = (self.level(r, last[user], now), turn[user], r.seq)
                    if best is None or key < best[0]:
                        best = (key, user, r)
            assert best is not None
            _, user, r = best
            out.append(r)
            waiting[user].remove(r)
            stamp += 2
            turn[user], last[user] = stamp, now
            if not waiting[user]:
                del waiting[user]
        return out

    def pop(self, now: float, eligible: Callable[[Req], bool]) -> Req | None:
        chosen = next((r for r in self.order(now) if eligible(r)), None)
        if chosen is None:
            return None
        if chosen in self.front:
            self.front.remove(chosen)
            return chosen
        user = chosen.user_id
        self.waiting[user].remove(chosen)
        self.stamp += 2
        self.last_served = user
        if self.waiting[user]:
            self.turn[user], self.last_turn_at[user] = self.stamp, now
        else:
            del self.waiting[user], self.turn[user]
            self.last_turn_at.pop(user)
        return chosen

    def remove(self, r: Req) -> None:
        if r in self.front:
            self.front.remove(r)
            return
        self.waiting[r.user_id].remove(r)
        if not self.waiting[r.user_id]:
            del self.waiting[r.user_id], self.turn[r.user_id]
            self.last_turn_at.pop(r.user_id)


@pytest.mark.parametrize("seed", range(30))
def test_the_kept_order_answers_as_the_rule_replayed_from_scratch(seed: int) -> None:
    # The queue keeps a ranked order and consumes it, and holds arrivals beside it until
    # they matter: every pop, position and order must still be the rule's own answer.
    rng = random.Random(seed)
    make = Requests()
    q: DispatchQueue[Req] = DispatchQueue(30.0)
    rule = Rule(30.0)
    now = 0.0
    popped: list[Req] = []
    for step in range(400):
        waiting = rule.front + [r for rs in rule.waiting.values() for r in rs]
        op = rng.random()
        if op < 0.4 or not waiting:
            user = f"u{rng.randrange(8)}"
            group = rng.choice([None, None, f"{user}-g1", f"{user}-g2"])  # a user's own
            r = make(user, rng.randint(1, 10), at=now, label=f"r{step}", group=group)
            q.add(r)
            rule.add(r)
        elif op < 0.7:
            skip = rng.randrange(4)  # 0: all eligible; else every skip-th seq is not
            eligible = (lambda r: True) if skip == 0 else (lambda r, k=skip: r.seq % k != 0)
            expected = rule.pop(now, eligible)
            assert q.pop_next(now, eligible) is expected, step
            if expected is not None:
                popped.append(expected)
        elif op < 0.78:
            r = rng.choice(waiting)
            q.remove(r)
            rule.remove(r)
        elif op < 0.8 and popped:
            r = popped.pop(rng.randrange(len(popped)))
            q.add_front(r)
            rule.front.append(r)
        elif op < 0.9:
            r = rng.choice(waiting)
            assert q.position(r, now) == rule.order(now).index(r), step
        else:
            now += rng.choice([0.0, 0.3, 1.0, 7.0, 29.0, 31.0, 95.0])
        if rng.random() < 0.1:
            assert list(q.order(now)) == rule.order(now), step
    assert list(q.order(now)) == rule.order(now)


def test_arrivals_wait_beside_the_ranked_order_until_a_rank(make: Requests) -> None:
    q: DispatchQueue[Req] = DispatchQueue(30.0)
    first, second, third = (make(u, 5, label=u) for u in "abc")
    q.add(first)
    q.rank(0.0)
    assert q.ranked_position(first, 0.0) == 0
    q.add(second)
    q.add(third)
    assert q.ranked_position(second, 0.0) is None  # not ranked yet: counted by no one
    assert q.pop_next(0.0) is first  # the ranked head goes without a rank
    assert q.ranked_position(second, 0.0) is None
    assert q.position(third, 0.0) == 1  # the exact answer ranks them
    assert q.ranked_position(second, 0.0) == 0
