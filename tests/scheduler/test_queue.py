"""The dispatch order on its own: one static key per request (priority, aging, fairness)."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from service.scheduler.queue import DispatchQueue, Spacing


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


def labels(q: DispatchQueue[Req]) -> list[str]:
    return [r.label for r in q.order()]


def drain(q: DispatchQueue[Req]) -> list[str]:
    out = []
    while len(q):
        request = q.pop_next()
        assert request is not None
        out.append(request.label)
    return out


def test_a_users_own_requests_go_by_priority_then_submission(make: Requests) -> None:
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


def test_one_level_is_worth_one_interval_of_a_users_spacing(make: Requests) -> None:
    q: DispatchQueue[Req] = DispatchQueue(30.0)
    for i in range(3):
        q.add(make("alice", 1, label=f"a{i}"))  # keys 0, 30, 60
    q.add(make("bob", 2, label="b"))  # key 30: level with alice's second, and later
    q.add(make("carol", 3, label="c"))  # key 60
    assert labels(q) == ["a0", "a1", "b", "a2", "c"]


def test_a_newcomer_joins_at_its_arrival_among_spread_out_bursts(make: Requests) -> None:
    q: DispatchQueue[Req] = DispatchQueue(30.0)
    for i in range(5):
        q.add(make("alice", 5, label=f"a{i}"))  # spread over 0, 30, ... 120
    q.add(make("bob", 5, label="b0"))
    assert q.pop_next().label == "a0"  # type: ignore[union-attr]
    assert q.pop_next().label == "b0"  # type: ignore[union-attr]
    q.add(make("carol", 5, at=40.0, label="c0"))  # after alice's second place (30)
    assert labels(q) == ["a1", "c0", "a2", "a3", "a4"]


@pytest.mark.parametrize("served_before", [0, 7])
def test_popping_follows_the_predicted_order(make: Requests, served_before: int) -> None:
    q: DispatchQueue[Req] = DispatchQueue(30.0)
    users = ["u1", "u2", "u3"]
    for i in range(30):
        q.add(make(users[i % 3 if i % 4 else 0], 1 + (i * 7) % 10, at=i * 5.0, label=f"r{i}"))
    for k in range(served_before):
        q.pop_next()
    predicted = labels(q)
    assert drain(q) == predicted
    assert len(predicted) == 30 - served_before


def test_positions_match_the_order(make: Requests) -> None:
    q: DispatchQueue[Req] = DispatchQueue(30.0)
    reqs = [make(u, p, label=f"{u}{p}") for u, p in [("a", 3), ("b", 1), ("a", 1)]]
    for r in reqs:
        q.add(r)
    order = list(q.order())
    assert [q.position(r) for r in order] == [0, 1, 2]
    q.remove(order[0])
    assert [q.position(r) for r in order[1:]] == [0, 1]


def test_a_request_ranks_with_one_k_levels_more_urgent_arriving_k_intervals_later(
    make: Requests,
) -> None:
    q: DispatchQueue[Req] = DispatchQueue(30.0)
    q.add(make("low", 10, at=0.0, label="low"))  # key 270
    q.add(make("high", 3, at=100.0, label="high"))  # key 160: ahead
    q.add(make("late", 1, at=270.0, label="late"))  # key 270: level, and after it
    q.add(make("early", 1, at=269.0, label="early"))  # key 269: ahead of it
    assert labels(q) == ["high", "early", "low", "late"]


def test_a_burst_does_not_age_as_a_block(make: Requests) -> None:
    """A burst is spread one interval apart, so a late arrival is not stuck behind it."""
    q: DispatchQueue[Req] = DispatchQueue(30.0)
    for i in range(10):
        q.add(make("alice", 5, at=0.0, label=f"a{i}"))
    t = 0.0
    served = [q.pop_next().label]  # type: ignore[union-attr]
    for _ in range(3):  # one of alice's requests every 20 s
        t += 20.0
        served.append(q.pop_next().label)  # type: ignore[union-attr]
    q.add(make("bob", 5, at=t + 1, label="b0"))
    t += 20.0
    assert q.pop_next().label == "b0"  # type: ignore[union-attr]
    assert served == ["a0", "a1", "a2", "a3"]


@pytest.mark.parametrize("interval", [0.0, -1.0, math.inf, math.nan])
def test_rejects_an_aging_interval_that_is_not_positive_and_finite(interval: float) -> None:
    with pytest.raises(ValueError):
        DispatchQueue(interval)


def test_a_conversation_keeps_submission_order_whatever_the_priorities(make: Requests) -> None:
    q: DispatchQueue[Req] = DispatchQueue(30.0)
    q.add(make("u", 9, label="c-first", group="c"))
    q.add(make("u", 1, label="c-urgent", group="c"))
    q.add(make("u", 5, label="loose"))
    q.add(make("v", 5, label="v"))
    # c-urgent takes u's earliest place but is keyed behind c-first, which it waits for.
    assert labels(q) == ["v", "loose", "c-first", "c-urgent"]
    assert q.position(next(r for r in q if r.label == "c-urgent")) == 3


def test_pop_next_skips_requests_that_are_not_eligible(make: Requests) -> None:
    q: DispatchQueue[Req] = DispatchQueue(30.0)
    blocked = make("u", 1, label="blocked", group="c")
    q.add(blocked)
    q.add(make("v", 5, label="free"))
    first = q.pop_next(lambda r: r is not blocked)
    assert first is not None and first.label == "free"
    assert q.pop_next(lambda r: r is not blocked) is None
    assert labels(q) == ["blocked"]  # it kept its place


def test_put_back_requests_go_first_in_the_order_they_came_back(make: Requests) -> None:
    q: DispatchQueue[Req] = DispatchQueue(30.0)
    for label in ("a", "b", "c"):
        q.add(make(label, 1, label=label))
    first, second = q.pop_next(), q.pop_next()
    assert first is not None and second is not None
    q.add_front(second)
    q.add_front(first)
    assert labels(q) == ["b", "a", "c"]
    assert list(q.of_user("a")) == [first]


def test_the_spacing_is_shared_by_the_queues_of_every_provider(make: Requests) -> None:
    spacing = Spacing(30.0)
    ollama: DispatchQueue[Req] = DispatchQueue(spacing)
    anthropic: DispatchQueue[Req] = DispatchQueue(spacing)
    ollama.add(make("u", 5, label="first"))
    later = make("u", 5, label="second")
    anthropic.add(later)
    assert anthropic.key(later) == 30.0 + 4 * 30.0  # the user's second place


def test_an_arrival_behind_everyone_moves_no_position(make: Requests) -> None:
    q: DispatchQueue[Req] = DispatchQueue(30.0)
    q.add(make("a", 5, label="a"))
    version = q.version
    q.add(make("b", 5, at=1.0, label="b"))  # key after a's: nobody moved
    assert q.version == version
    q.add(make("c", 1, at=2.0, label="c"))  # ahead of both: their positions moved
    assert q.version != version


class Rule:
    """The order rule kept the plain way, for the differential test: a dict of keys, sorted
    from scratch at every question. Keys are set when a request arrives: its user's
    waiting requests share out their vstarts by (priority, seq) again, and each
    conversation's turns are chained; they stay as they are when requests leave."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.latest: dict[str, float] = {}
        self.share: dict[Req, float] = {}  # each keyed request's vstart
        self.key: dict[Req, float] = {}
        self.front: list[Req] = []

    def add(self, r: Req) -> None:
        previous = self.latest.get(r.user_id)
        v = r.enqueued_mono if previous is None else max(r.enqueued_mono, previous + self.interval)
        self.latest[r.user_id] = v
        self.share[r] = v
        mine = sorted((w for w in self.share if w.user_id == r.user_id), key=lambda w: w.seq)
        starts = sorted(self.share[w] for w in mine)
        for w, start in zip(sorted(mine, key=lambda w: (w.priority, w.seq)), starts, strict=True):
            self.share[w] = start
        last: dict[str, float] = {}
        for w in mine:
            key = self.share[w] + (w.priority - 1) * self.interval
            if w.group is not None:
                key = max(key, last.get(w.group, key))
                last[w.group] = key
            self.key[w] = key

    @property
    def waiting(self) -> list[Req]:
        return list(self.key)

    def remove(self, r: Req) -> None:
        if r in self.front:
            self.front.remove(r)
            return
        del self.share[r]
        del self.key[r]

    def order(self) -> list[Req]:
        return self.front + sorted(self.key, key=lambda r: (self.key[r], r.seq))

    def pop(self, eligible: Callable[[Req], bool]) -> Req | None:
        chosen = next((r for r in self.order() if eligible(r)), None)
        if chosen is not None:
            self.remove(chosen)
        return chosen


@pytest.mark.parametrize("seed", range(6))
def test_the_kept_order_answers_as_the_rule_replayed_from_scratch(seed: int) -> None:
    # The queue keeps its keys sorted and re-keys one user at each arrival: every pop,
    # position and order must be the rule's own answer, recomputed from scratch.
    rng = random.Random(seed)
    make = Requests()
    q: DispatchQueue[Req] = DispatchQueue(30.0)
    rule = Rule(30.0)
    now = 0.0
    popped: list[Req] = []
    for step in range(400):
        waiting = rule.front + rule.waiting
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
            expected = rule.pop(eligible)
            assert q.pop_next(eligible) is expected, step
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
            assert q.position(r) == rule.order().index(r), step
        else:
            now += rng.choice([0.0, 0.3, 1.0, 7.0, 29.0, 31.0, 95.0])
        if rng.random() < 0.1:
            assert list(q.order()) == rule.order(), step
    assert list(q.order()) == rule.order()
