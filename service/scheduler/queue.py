"""The dispatch order of one provider's waiting requests.

How the next request is chosen
------------------------------
Each provider has its own queue and its own number of slots. Whenever a slot
is free, the queue hands it to the request that comes first by these rules:

1. **Effective priority first.** Priority 1 is the most urgent, 10 the least.
   A request's effective priority is its priority improved by one level for
   every full ``aging_interval_s`` its user has waited for a turn, and never
   better than 1. "Waited for a turn" counts from the moment the request was
   submitted, or from the last time one of the same user's requests got a slot
   if that is later. So a priority-10 request reaches priority 1 after nine
   intervals (4.5 minutes with the default 30 s) and cannot starve under a
   stream of urgent work, while a user's large burst does not age as a block
   and crowd out other users who arrive later.
2. **Then users take turns.** Among users whose best waiting request has the
   best effective priority, the user whose last turn lies furthest back goes
   first. A user who starts waiting (having had nothing waiting before) joins
   the rotation just ahead of the user who was served most recently, but behind
   users who were already waiting for their turn. Hence one user's burst of
   twenty requests delays another user's first request of the same priority by
   at most one request from the burst, and a flow of newcomers cannot starve a
   user who is already waiting.
3. **A user's own requests** go by effective priority, then in submission order.
   Aging is about a user waiting for a turn, so a user's stream of urgent
   requests can hold back that same user's less urgent ones.
4. **Turns of one conversation keep their order.** A request that belongs to
   a conversation (its ``group``) is a candidate only once every earlier
   request of that conversation has left the queue, whatever its priority, so
   a conversation's history never interleaves. The scheduler applies the same
   rule to running requests: a turn whose conversation has one running is not
   eligible for a slot yet (``pop_next``'s ``eligible``), but it keeps its
   place in this order.

5. **A request put back** (its host went down before it had sent anything)
   goes to the front, ahead of every request the rules above order: it has
   had its turn already. Requests put back keep the order they came back in.

A request's *position* is the number of requests this rule would dispatch
before it if nothing else arrived and the clock stood still. It changes when
requests arrive or leave and when aging lifts a request by a level; it is
recomputed only then, never per token.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar


class Queued(Protocol):
    """What the queue needs to know about a waiting request."""

    @property
    def user_id(self) -> str: ...
    @property
    def priority(self) -> int: ...
    @property
    def enqueued_mono(self) -> float: ...
    @property
    def seq(self) -> int: ...  # unique and increasing in submission order
    @property
    def group(self) -> str | None: ...  # one user's requests that go in submission order


Q = TypeVar("Q", bound=Queued)

AGING_STEPS = 60  # waiting time counts in steps of aging_interval_s / AGING_STEPS


@dataclass
class _UserTurns(Generic[Q]):
    """One user's waiting requests and their place in the rotation."""

    requests: list[Q]
    turn: int  # rotation stamp: the smaller, the longer the user has waited for a turn
    last_turn_at: float = -math.inf  # aging counts from here if later than the submission


class DispatchQueue(Generic[Q]):
    """Waiting requests of one provider, kept in the order they will get a slot.

    The order is ranked in full (``_rank``, n log n) and then consumed: popping
    the request at its head leaves the rest of a ranked order true (the rank
    replays exactly those pops), so a queue that only dispatches never ranks
    again before aging lifts a level. Requests added since the last rank wait
    beside it (``_pending``) until a position or a pop needs them, so a burst
    of arrivals costs one rank, not one per arrival.
    """

    def __init__(self, aging_interval_s: float) -> None:
        if not aging_interval_s > 0:
            raise ValueError("aging_interval_s must be positive (math.inf disables aging)")
        self._aging_interval_s = aging_interval_s
        # Waiting time counts in steps of 1/60 of the interval, so levels lift (and
        # the ranked order goes stale) at most 60 times an interval, not at every
        # request's own instant.
        self._aging_step_s = aging_interval_s / AGING_STEPS
        self._users: dict[str, _UserTurns[Q]] = {}
        self._count = 0
        # Each dispatch takes the next even stamp; a newcomer takes the odd one just
        # below the latest, which puts it ahead of the user served last and no one else.
        self._stamp = 0
        self._last_served: str | None = None
        self._front: list[Q] = []  # requests put back, ahead of the ranked order
        # The ranked order: _order[_cursor:], each request's index in _index by seq.
        self._order: list[Q] = []
        self._cursor = 0
        self._index: dict[int, int] = {}
        self._pending: dict[int, Q] = {}  # added since the last rank, by seq
        self._groups: dict[str, int] = {}  # waiting requests per group
        self._stale = True  # a change the ranked order does not follow (removal, put-back)
        # Moves on every change that can move a ranked request's position (not on an
        # arrival left pending): watchers of positions need waking only then.
        self.version = 0
        self._valid_until = -math.inf  # the ranked order is stale from this clock reading

    def __len__(self) -> int:
        return self._count + len(self._front)

    def __iter__(self) -> Iterator[Q]:
        yield from self._front
        for turns in self._users.values():
            yield from turns.requests

    def of_user(self, user_id: str) -> Sequence[Q]:
        turns = self._users.get(user_id)
        front = tuple(r for r in self._front if r.user_id == user_id)
        return front + tuple(turns.requests) if turns else front

    def add(self, request: Q) -> None:
        turns = self._users.get(request.user_id)
        if turns is None:
            stamp = self._stamp if request.user_id == self._last_served else self._stamp - 1
            turns = self._users[request.user_id] = _UserTurns(requests=[], turn=stamp)
        turns.requests.append(request)
        self._count += 1
        self._join_group(request)
        self._pending[request.seq] = request

    def add_front(self, request: Q) -> None:
        """Put back a request that had its turn, ahead of everything ranked (rule 5)."""
        self._front.append(request)
        self._join_group(request)
        self._stale = True
        self.version += 1

    def remove(self, request: Q) -> None:
        """Take out a request that leaves without a slot (cancel, timeout, shutdown)."""
        self._leave_group(request)
        if request in self._front:
            self._front.remove(request)
            self._stale = True
            return
        turns = self._users[request.user_id]
        turns.requests.remove(request)
        if not turns.requests:
            del self._users[request.user_id]
        self._count -= 1
        if self._pending.pop(request.seq, None) is None:
            self._stale = True
            self.version += 1

    def pop_next(self, now: float, eligible: Callable[[Q], bool] | None = None) -> Q | None:
        """Take out the first request (that is ``eligible``) and give its user a turn.

        None when no waiting request is eligible.
        """
        if not len(self):
            return None
        if not self._holds(now):
            self._rank(now)
        request = self._head(now)
        if request is not None and eligible is not None and not eligible(request):
            request = None
        if request is None:  # out of turn: walk the whole order
            order = self.order(now)
            request = next((r for r in order if eligible is None or eligible(r)), None)
            if request is None:
                return None
        self.version += 1
        in_turn = self._cursor < len(self._order) and self._order[self._cursor] is request
        if in_turn:
            self._cursor += 1
        elif self._pending.pop(request.seq, None) is None or self._cursor < len(self._order):
            self._stale = True  # taken out of the ranked order's turn
        self._leave_group(request)
        if self._front and request in self._front:
            self._front.remove(request)  # its turn was counted when it first started
            return request
        user = request.user_id
        turns = self._users[user]
        turns.requests.remove(request)
        self._count -= 1
        self._stamp += 2
        self._last_served = user
        if turns.requests:
            turns.turn = self._stamp
            turns.last_turn_at = now
            # Its other requests age afresh from now (all on the same steps): the order
            # holds until they lift.
            lifting = next((r for r in turns.requests if r.priority > 1), None)
            if lifting is not None:
                self._valid_until = min(self._valid_until, self._next_lift(lifting, now, now))
        else:
            del self._users[user]
        return request

    def _head(self, now: float) -> Q | None:
        """The first request of the whole order: the ranked head or one pending.

        A user's key is the best of its requests that no earlier turn of their
        conversation precedes; the ranked head has the best key among ranked
        requests, so the first of all is it or a pending request with a better one.
        """
        head = self._order[self._cursor] if self._cursor < len(self._order) else None
        if head is not None and self._front and head in self._front:
            return head
        best: tuple[int, int, int] | None = None
        if head is not None:
            turns = self._users[head.user_id]
            best = (self._level(head, turns.last_turn_at, now), turns.turn, head.seq)
        for request in self._pending.values():
            turns = self._users[request.user_id]
            group = request.group
            if (
                group is not None
                and self._groups[group] > 1
                and any(o.group == group and o.seq < request.seq for o in turns.requests)
            ):
                continue  # an earlier turn of its conversation goes first
            key = (self._level(request, turns.last_turn_at, now), turns.turn, request.seq)
            if best is None or key < best:
                best, head = key, request
        return head

    def position(self, request: Q, now: float) -> int:
        """Requests the rule dispatches before ``request`` (exact: ranks what is pending)."""
        if self._pending or not self._holds(now):
            self._rank(now)
        return self._index[request.seq] - self._cursor

    def ranked_position(self, request: Q, now: float) -> int | None:
        """``request``'s position in the last rank (None while it is pending).

        Requests added since that rank are not counted ahead of it: a watcher
        that reports positions now and then takes this, and ranks with ``rank``.
        """
        if not self._holds(now):
            self._rank(now)
        index = self._index.get(request.seq)
        return None if index is None or request.seq in self._pending else index - self._cursor

    def rank(self, now: float) -> None:
        """Rank the requests pending (if any, or if the ranked order went stale)."""
        if self._pending or not self._holds(now):
            self._rank(now)

    def order(self, now: float) -> Sequence[Q]:
        """All waiting requests in dispatch order, as of ``now``."""
        if self._pending or not self._holds(now):
            self._rank(now)
        return self._order[self._cursor :]

    def reorder_at(self, now: float) -> float | None:
        """When aging next lifts some request a level (and may change positions)."""
        if not self._holds(now):
            self._rank(now)
        at = self._valid_until
        for request in self._pending.values():
            at = min(at, self._next_lift(request, self._users[request.user_id].last_turn_at, now))
        return None if math.isinf(at) else at

    def level(self, request: Q, now: float) -> int:
        """The effective priority of a waiting request at ``now``."""
        return self._level(request, self._users[request.user_id].last_turn_at, now)

    def _holds(self, now: float) -> bool:
        return not self._stale and now < self._valid_until

    def _join_group(self, request: Q) -> None:
        if request.group is not None:
            self._groups[request.group] = self._groups.get(request.group, 0) + 1

    def _leave_group(self, request: Q) -> None:
        group = request.group
        if group is not None:
            left = self._groups[group] - 1
            if left:
                self._groups[group] = left
            else:
                del self._groups[group]

    def _level(self, request: Q, last_turn_at: float, now: float) -> int:
        return self._aged(request, last_turn_at, now)[0]

    def _next_lift(self, request: Q, last_turn_at: float, now: float) -> float:
        return self._aged(request, last_turn_at, now)[1]

    def _aged(self, request: Q, last_turn_at: float, now: float) -> tuple[int, float]:
        """The request's level at ``now`` and when it next lifts (inf: never)."""
        interval = self._aging_interval_s
        if interval == math.inf:
            return max(1, request.priority), math.inf
        step = self._aging_step_s
        since = math.ceil(max(request.enqueued_mono, last_turn_at) / step) * step
        lifted = math.floor((now - since) / interval) if now > since else 0
        level = request.priority - lifted
        if level <= 1:
            return 1, math.inf
        # Never "now or earlier" (float rounding at a step), or the cache would never hold.
        return level, max(since + (lifted + 1) * interval, math.nextafter(now, math.inf))

    def _rank(self, now: float) -> None:
        """Replay the dispatch rule on the current queue with the clock held at ``now``."""
        heap: list[tuple[int, int, int, str]] = []
        valid_until = math.inf
        firsts: dict[str, Q] = {}
        for user, turns in self._users.items():
            requests = turns.requests
            if len(requests) == 1:  # most users: no groups to weigh, nothing after it
                (request,) = requests
                level, lift = self._aged(request, turns.last_turn_at, now)
                if lift < valid_until:
                    valid_until = lift
                firsts[user] = request
                heap.append((level, turns.turn, request.seq, user))
                continue
            best: tuple[int, int] | None = None
            heads = _group_heads(requests)
            for request in requests:
                level, lift = self._aged(request, turns.last_turn_at, now)
                if lift < valid_until:
                    valid_until = lift
                if request.seq not in heads:
                    continue
                key = (level, request.seq)
                if best is None or key < best:
                    best, firsts[user] = key, request
            assert best is not None
            heap.append((best[0], turns.turn, best[1], user))
        heapq.heapify(heap)

        # After a user's turn its remaining requests start aging afresh, so at this
        # frozen instant they rank by plain priority, then submission order.
        rest: dict[str, _Rest[Q]] = {}
        order: list[Q] = list(self._front)
        stamp = self._stamp
        while heap:
            _, _, _, user = heapq.heappop(heap)
            remaining = rest.get(user)
            if remaining is not None:
                chosen = remaining.take()
            else:
                chosen = firsts[user]
                requests = self._users[user].requests
                if len(requests) == 1:
                    order.append(chosen)
                    stamp += 2
                    continue
                remaining = rest[user] = _Rest([r for r in requests if r is not chosen])
            order.append(chosen)
            stamp += 2
            if remaining:
                upcoming = remaining.peek()
                heapq.heappush(heap, (upcoming.priority, stamp, upcoming.seq, user))

        before = self._order[self._cursor :]
        if len(order) < len(before) or any(a is not b for a, b in zip(before, order, strict=False)):
            self.version += 1  # some ranked request moved (not only newcomers behind them)
        self._order = order
        self._cursor = 0
        self._index = {request.seq: i for i, request in enumerate(order)}
        self._pending.clear()
        self._stale = False
        self._valid_until = valid_until


def _group_heads(requests: Sequence[Queued]) -> set[int]:
    """Seqs of the requests that no earlier request of their group precedes."""
    first: dict[str, int] = {}
    heads: set[int] = set()
    for request in requests:
        group = request.group
        if group is None:
            heads.add(request.seq)
        elif group not in first or request.seq < first[group]:
            first[group] = request.seq
    heads.update(first.values())
    return heads


class _Rest(Generic[Q]):
    """One user's remaining requests at a frozen instant: by priority, then submission
    order, among those whose group has no earlier request left."""

    def __init__(self, requests: Sequence[Q]) -> None:
        # Only groups with a request held back behind an earlier one get a list:
        # most requests are their conversation's only one waiting.
        self._held: dict[str, list[Q]] = {}
        heads: dict[str, None] = {}
        heap: list[tuple[int, int]] = []
        self._by_seq: dict[int, Q] = {}
        for request in sorted(requests, key=lambda r: r.seq):
            group = request.group
            if group is not None:
                if group in heads:
                    self._held.setdefault(group, []).append(request)
                    continue
                heads[group] = None
            self._by_seq[request.seq] = request
            heap.append((request.priority, request.seq))
        heapq.heapify(heap)
        self._heap = heap
        for queue in self._held.values():
            queue.reverse()  # popped from the end, earliest last

    def __bool__(self) -> bool:
        return bool(self._heap)

    def peek(self) -> Q:
        return self._by_seq[self._heap[0][1]]

    def take(self) -> Q:
        _, seq = heapq.heappop(self._heap)
        request = self._by_seq.pop(seq)
        queue = self._held.get(request.group) if request.group is not None else None
        if queue:
            after = queue.pop()
            self._by_seq[after.seq] = after
            heapq.heappush(self._heap, (after.priority, after.seq))
        return request
