"""The dispatch order of one provider's waiting requests.

How the next request is chosen
------------------------------
Each provider has its own queue and its own number of slots. Whenever a slot
is free, the queue hands it to the waiting request with the smallest *order
key*, computed once when the request arrives (the same rule, to the letter,
as the shared queue in PostgreSQL: ``service/scheduler/pg_admission.py``)::

    vstart    = max(now, the user's previous vstart + aging_interval_s)
    order_key = vstart + (priority - 1) * aging_interval_s

1. **Priority, aged.** One priority level is worth one ``aging_interval_s``
   of waiting: a request that has waited k intervals ranks with one k levels
   more urgent that arrives now. A priority-10 request therefore goes ahead of
   any request that arrives nine intervals (4.5 minutes with the default 30 s)
   after it, so nothing starves under a stream of urgent work.
2. **Users take turns.** A user's requests are spread one interval apart
   (``vstart``), so a burst of twenty from one user delays another user's
   first request of the same priority by at most one request of the burst,
   and a user who has waited long is not overtaken by the bursts of others.
3. **A user's own requests** go by priority, then in submission order: the
   user's waiting requests share out that user's vstarts in that order (re-
   keyed when a request arrives), so an urgent request of a user goes ahead of
   the same user's earlier, less urgent ones.
4. **Turns of one conversation keep their order.** A turn's key is never
   below the key of the earlier waiting turn of its conversation (ties go by
   submission, so after it), and the scheduler does not start a turn while an
   earlier one of its conversation waits or runs (``pop_next``'s
   ``eligible``); it keeps its place in this order meanwhile.
5. **A request put back** (its host went down before it had sent anything)
   goes to the front, ahead of every keyed request: it has had its turn
   already. Requests put back keep the order they came back in.

Ties go by submission order. A request's *position* is the number of waiting
requests ordered before it. Keys never change with time, so a position moves
only when requests arrive ahead of it or leave: two waiting requests never
swap places as the clock runs. Positions are a binary search in the sorted
keys, arrivals an insertion, so ten thousand waiting requests cost little more
than ten.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections.abc import Callable, Iterator, Sequence
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

_FRONT, _KEYED = 0, 1  # put back first, then by order key
Entry = tuple[int, float, int]  # (_FRONT | _KEYED, key, seq): the sort order


class Spacing:
    """Each user's latest vstart, shared by the queues of one scheduler (every provider).

    ``vstart = max(now, previous + interval)``; a vstart an interval or more in
    the past gives the same result as none, so those are dropped now and then.
    """

    def __init__(self, aging_interval_s: float) -> None:
        if not 0 < aging_interval_s < math.inf:
            raise ValueError("aging_interval_s must be positive and finite")
        self.interval = aging_interval_s
        self._latest: dict[str, float] = {}
        self._prune_at = 1024

    def next(self, user_id: str, now: float) -> float:
        previous = self._latest.get(user_id)
        vstart = now if previous is None else max(now, previous + self.interval)
        self._latest[user_id] = vstart
        if len(self._latest) >= self._prune_at:
            horizon = now - self.interval
            self._latest = {u: v for u, v in self._latest.items() if v > horizon}
            self._prune_at = max(1024, 2 * len(self._latest))
        return vstart


class DispatchQueue(Generic[Q]):
    """Waiting requests of one provider, kept sorted by (put back first, order key, seq)."""

    def __init__(self, spacing: Spacing | float) -> None:
        """``spacing``: shared with the other providers' queues, or an aging interval of its own."""
        self._spacing = spacing if isinstance(spacing, Spacing) else Spacing(spacing)
        self._interval = self._spacing.interval
        self._entries: list[Entry] = []  # sorted: the dispatch order
        self._entry: dict[int, Entry] = {}  # seq → its entry
        self._by_seq: dict[int, Q] = {}
        self._vstart: dict[int, float] = {}  # seq → its share of its user's spacing
        self._users: dict[str, list[Q]] = {}  # keyed (not put back) requests, by seq
        self._put_back = 0  # put-back requests keep the order they came back in
        # Moves on every change that can move some waiting request's position (an
        # arrival behind everyone moves none): watchers of positions wake only then.
        self.version = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Q]:
        return iter(list(self._by_seq.values()))

    def of_user(self, user_id: str) -> Sequence[Q]:
        front: list[Q] = []
        for entry in self._entries:  # put-back requests sort first, and are few
            if entry[0] != _FRONT:
                break
            request = self._by_seq[entry[2]]
            if request.user_id == user_id:
                front.append(request)
        return (*front, *self._users.get(user_id, ()))

    def add(self, request: Q) -> None:
        """A request that starts waiting: keyed at its arrival (``enqueued_mono``)."""
        self._by_seq[request.seq] = request
        mine = self._users.setdefault(request.user_id, [])
        mine.append(request)
        self._vstart[request.seq] = self._spacing.next(request.user_id, request.enqueued_mono)
        if len(mine) == 1:
            self._place(request, self._vstart[request.seq] + self._levels(request))
        else:
            self._rekey(mine)

    def add_front(self, request: Q) -> None:
        """Put back a request that had its turn, ahead of everything keyed (rule 5)."""
        self._by_seq[request.seq] = request
        self._put_back += 1
        entry = (_FRONT, float(self._put_back), request.seq)
        self._entry[request.seq] = entry
        insort(self._entries, entry)
        self.version += 1

    def remove(self, request: Q) -> None:
        """Take out a request that leaves without a slot (cancel, timeout, shutdown)."""
        self._take(request)
        self.version += 1

    def pop_next(self, eligible: Callable[[Q], bool] | None = None) -> Q | None:
        """Take out the first request in order that is ``eligible``; None if there is none."""
        for entry in self._entries:
            request = self._by_seq[entry[2]]
            if eligible is None or eligible(request):
                self._take(request)
                self.version += 1
                return request
        return None

    def position(self, request: Q) -> int:
        """Waiting requests ordered before ``request``."""
        return bisect_left(self._entries, self._entry[request.seq])

    def order(self) -> Sequence[Q]:
        """All waiting requests in dispatch order."""
        return [self._by_seq[entry[2]] for entry in self._entries]

    def key(self, request: Q) -> float:
        """The request's order key (put-back requests: their put-back count)."""
        return self._entry[request.seq][1]

    def _levels(self, request: Q) -> float:
        return (request.priority - 1) * self._interval

    def _place(self, request: Q, key: float) -> None:
        entry = (_KEYED, key, request.seq)
        old = self._entry.get(request.seq)
        if old == entry:
            return
        if old is not None:
            del self._entries[bisect_left(self._entries, old)]
        self._entry[request.seq] = entry
        at = bisect_left(self._entries, entry)
        self._entries.insert(at, entry)
        if old is not None or at < len(self._entries) - 1:
            self.version += 1  # someone's position moved

    def _rekey(self, mine: list[Q]) -> None:
        """Share out one user's vstarts by (priority, seq); keep conversations in order."""
        starts = sorted(self._vstart[r.seq] for r in mine)
        urgent_first = sorted(mine, key=lambda r: (r.priority, r.seq))
        for request, start in zip(urgent_first, starts, strict=True):
            self._vstart[request.seq] = start
        last: dict[str, float] = {}  # conversation → key of its latest waiting turn so far
        for request in mine:  # by seq: a conversation's earlier turns are keyed first
            key = self._vstart[request.seq] + self._levels(request)
            group = request.group
            if group is not None:
                key = max(key, last.get(group, key))
                last[group] = key
            self._place(request, key)

    def _take(self, request: Q) -> None:
        seq = request.seq
        entry = self._entry.pop(seq)
        del self._entries[bisect_left(self._entries, entry)]
        del self._by_seq[seq]
        if entry[0] == _KEYED:
            del self._vstart[seq]
            mine = self._users[request.user_id]
            mine.remove(request)
            if not mine:
                del self._users[request.user_id]
