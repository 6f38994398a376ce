"""A revoked token's waiting work does not run.

When a reload of the users file revokes a user's token (or removes the
user), that user's waiting requests are cancelled with UNAUTHENTICATED, so
their streams end with an ``unauthenticated`` error instead of starting a
model call on a credential that is gone. Requests already running finish:
they were authorised when they started, and cutting an answer half-way
helps no one. A request that authenticated just before the reload but
enters the queue after this cancel listed the user's requests is caught by
``ChatService`` instead: it checks the caller's token again at the grant.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from service.errors import AgentError, NotFound, Unauthenticated
from service.scheduler.interface import RequestScheduler

log = logging.getLogger(__name__)


class Revocations:
    """Cancels the waiting requests of revoked users (``Authenticator.on_revoked``)."""

    def __init__(self, scheduler: RequestScheduler) -> None:
        self._scheduler = scheduler
        self._tasks: set[asyncio.Task[int]] = set()

    def revoked(self, users: Iterable[str]) -> None:
        """The listener: start cancelling (a reload happens inside a synchronous call)."""
        task = asyncio.get_running_loop().create_task(self.cancel_waiting(frozenset(users)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def cancel_waiting(self, users: frozenset[str]) -> int:
        """Cancel every waiting request of ``users``; how many were cancelled."""
        cancelled = 0
        for user in sorted(users):
            for info in await self._scheduler.requests(user):
                if info.state != "queued":
                    continue  # running ones finish
                error = Unauthenticated(
                    f"the token of user {user!r} was revoked while this request waited; "
                    "sign in again and resend it"
                )
                try:
                    await self._scheduler.cancel(info.request_id, user, error)
                except NotFound:
                    continue  # it ended meanwhile
                except AgentError as exc:
                    log.warning("could not cancel request %s: %s", info.request_id, exc.message)
                    continue
                cancelled += 1
        if cancelled:
            log.info("cancelled %d waiting request(s) of revoked user(s)", cancelled)
        return cancelled

    async def settle(self) -> None:
        """Wait for the cancellations in progress (tests, shutdown)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
