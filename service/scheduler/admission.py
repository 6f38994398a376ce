"""The caps on waiting requests: service-wide and per user, refused fast with a retry hint."""

from __future__ import annotations

from collections.abc import Callable

from service.context import is_request_id
from service.errors import InvalidRequest, QueueFull

MIN_PRIORITY, MAX_PRIORITY = 1, 10


def check_request(*, priority: int, request_id: str | None) -> None:
    """The rules every submitted request meets; InvalidRequest naming the first broken one.

    The scheduler applies them at submit; callers that do work before submitting
    (finding or creating a conversation) call this first so a bad request costs nothing.
    """
    if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise InvalidRequest(
            f"priority must be between {MIN_PRIORITY} (highest) and {MAX_PRIORITY} (lowest), "
            f"got {priority}"
        )
    if request_id is not None and not is_request_id(request_id):
        raise InvalidRequest("request_id must be 1-64 letters, digits, '-' or '_'")


class WaitingCaps:
    """Counts waiting requests and refuses one more beyond either cap.

    Only waiting requests count: one that gets a slot at once never occupies
    the queue, and a running one has already left it.
    """

    def __init__(self, max_pending: int, max_pending_per_user: int) -> None:
        if max_pending < 0 or max_pending_per_user < 0:
            raise ValueError("queue caps must not be negative")
        self.max_pending = max_pending
        self.max_pending_per_user = max_pending_per_user
        self.total = 0
        self._by_user: dict[str, int] = {}

    def of_user(self, user_id: str) -> int:
        return self._by_user.get(user_id, 0)

    def enter(self, user_id: str) -> None:
        self.total += 1
        self._by_user[user_id] = self._by_user.get(user_id, 0) + 1

    def leave(self, user_id: str) -> None:
        self.total -= 1
        left = self._by_user[user_id] - 1
        if left:
            self._by_user[user_id] = left
        else:
            del self._by_user[user_id]

    def check(
        self,
        user_id: str,
        *,
        user_turnover_s: Callable[[], float],
        any_turnover_s: Callable[[], float],
    ) -> None:
        """Raise QueueFull if ``user_id`` may not queue one more request.

        The retry hints are computed only when a cap is hit: ``user_turnover_s``
        estimates when one of this user's waiting requests starts, and
        ``any_turnover_s`` when any waiting request does.
        """
        mine = self.of_user(user_id)
        if mine >= self.max_pending_per_user:
            raise QueueFull(
                f"user {user_id!r} already has {mine} requests waiting, the per-user limit "
                f"(max_pending_per_user={self.max_pending_per_user}); retry when one has started",
                retry_after_s=retry_hint(user_turnover_s()),
                cap="max_pending_per_user",
            )
        if self.total >= self.max_pending:
            raise QueueFull(
                f"the service queue is full: {self.total} requests are waiting, the "
                f"service-wide limit (max_pending={self.max_pending})",
                retry_after_s=retry_hint(any_turnover_s()),
                cap="max_pending",
            )


def retry_hint(seconds: float) -> float:
    """A Retry-After value: the estimate to a tenth of a second, never under one second."""
    return max(1.0, round(seconds, 1))
