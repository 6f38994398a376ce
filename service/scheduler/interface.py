"""The scheduler as the rest of the service sees it: one narrow interface.

Everything that owns or inspects accepted requests (the chat turn, the RPC
handlers, the stream registry, the host pool's health checks and failover,
shutdown, metrics) goes through these operations and nothing else, so the
in-process ``Scheduler`` can be replaced by one whose state lives in a shared
engine (PostgreSQL or Redis) for several service replicas (DESIGN §9) without
touching its callers. ``tests/scheduler/test_interface.py`` holds the
in-process scheduler to it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Protocol

from service.scheduler.estimates import QueueStats
from service.scheduler.hosts import Host
from service.scheduler.registry import Outcome, RequestInfo, Ticket


class RequestScheduler(Protocol):
    """Admission, dispatch, lifecycle and reporting of every accepted request."""

    # admission and dispatch
    def submit(
        self,
        *,
        user_id: str,
        provider: str,
        priority: int = 5,
        request_id: str | None = None,
        conversation_id: str | None = None,
        model: str = "",
        max_active: int = 0,
    ) -> Ticket: ...

    async def acquire(self, ticket: Ticket, timeout: float | None = None) -> None: ...  # noqa: ASYNC109

    def finish(self, ticket: Ticket, outcome: Outcome) -> None: ...

    def put_back(self, ticket: Ticket) -> None: ...

    # owners and operators
    def cancel(self, request_id: str, user_id: str) -> RequestInfo: ...

    def find(self, request_id: str, user_id: str) -> Ticket | None: ...

    def status(self, request_id: str, user_id: str) -> RequestInfo: ...

    def requests(self, user_id: str | None = None) -> list[RequestInfo]: ...

    def watch_position(
        self, ticket: Ticket, min_interval_s: float = 0.2
    ) -> AsyncIterator[tuple[int, float]]: ...

    # hosts of a pool
    def report_host(
        self,
        provider: str,
        name: str,
        *,
        up: bool,
        error: str = "",
        loaded: Iterable[str] | None = None,
        models: Iterable[str] | None = None,
    ) -> None: ...

    def hosts(self, provider: str) -> Sequence[Host]: ...

    # the service as a whole
    def stats(self) -> QueueStats: ...

    def begin_shutdown(self, message: str = "service is shutting down") -> None: ...

    async def drain(self, timeout: float) -> bool: ...  # noqa: ASYNC109
