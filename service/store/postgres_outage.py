"""How the PostgreSQL store lives through a database outage.

Three parts:

- ``connection_failure``: whether an exception means "the database is not
  there" (refused, reset, shut down, starting up, a connection the server
  killed) rather than a fault of the statement;
- ``StoreOutage``: the store's view of the database, logged once at error
  level when it goes away and once when it answers again (never per request);
- ``PoolRunner``: runs an operation on a pooled connection, replaces the
  connections a restart or ``pg_terminate_backend`` killed, and retries only
  what is safe to run twice: reads and idempotent writes at once, a turn's
  append (keyed by its request id) for a bounded time while the database is away.

Every failure it gives up on becomes ``StoreUnavailable`` (503 + Retry-After,
reason ``STORE_UNAVAILABLE``); other errors pass through untouched.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Any, TypeVar

import asyncpg
from asyncpg import exceptions as pgerr

from service.errors import StoreUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

# Errors that say the server or the connection is gone, not that the statement is wrong.
_GONE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, broken pipe; TimeoutError (a connect timeout) is one too
    pgerr.PostgresConnectionError,  # class 08: the connection does not exist / failed
    pgerr.AdminShutdownError,  # 57P01: terminated by an administrator (pg_terminate_backend)
    pgerr.CrashShutdownError,  # 57P02
    pgerr.CannotConnectNowError,  # 57P03: the server is starting up or shutting down
    pgerr.TooManyConnectionsError,  # 53300: full for now
    # The server's FATAL notice of a terminated session arrived while the connection
    # sat idle: the protocol is stuck ("another operation is in progress") until closed.
    asyncpg.InternalClientError,
)
# Attempts of a read when an established connection broke (a killed connection, a restart).
READ_ATTEMPTS = 3
# Backoff of a retried append while the database is away.
_FIRST_PAUSE_S = 0.1
_MAX_PAUSE_S = 1.0


def connection_failure(exc: BaseException, closed: bool = False) -> bool:
    """True when ``exc`` means the database or the connection is gone.

    ``closed`` (the connection was found closed when ``exc`` was raised)
    settles it whatever the error's class: asyncpg reports a connection it
    already knows is closed as a plain InterfaceError.
    """
    return isinstance(exc, _GONE) or (closed and isinstance(exc, asyncpg.InterfaceError))


def not_sent(exc: BaseException, closed: bool) -> bool:
    """True when the statement (or COMMIT) certainly never reached the server.

    asyncpg checks the connection before sending anything: a connection found
    closed (killed while idle in the pool, or under an earlier statement of
    the transaction, which the server then rolled back) fails with
    InterfaceError. A failure while a statement was on the wire is
    ConnectionDoesNotExistError instead: it may have run.
    """
    return closed and isinstance(exc, asyncpg.InterfaceError)


def _closed(conn: Any) -> bool:
    """Whether a pooled connection is closed; asked before it goes back to the pool.

    asyncpg hands a connection that closed under its user back to the pool at
    once and detaches the user's proxy, which then answers every call with
    InterfaceError: that too means closed.
    """
    try:
        return bool(conn.is_closed())
    except asyncpg.InterfaceError:
        return True


class _Broken(Exception):
    """An attempt failed because the connection or the server is gone."""

    def __init__(self, cause: Exception, *, acquired: bool, closed: bool) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.acquired = acquired  # False: no connection could be had (the server is down)
        self.closed = closed


class StoreOutage:
    """The store's view of its database: up, or down since a time; each change is logged once."""

    def __init__(
        self, *, what: str = "PostgreSQL", retry_after_s: float = 2.0, clock: Clock = time.monotonic
    ) -> None:
        self._what = what
        self._clock = clock
        self.retry_after_s = retry_after_s
        self.down_since: float | None = None
        self.refused = 0  # operations answered StoreUnavailable during the current outage

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def failed(self, exc: BaseException) -> StoreUnavailable:
        """Note a failure (logging the outage if it starts here); the error to give the caller."""
        if self.down_since is None:
            self.down_since = self._clock()
            self.refused = 0
            log.error(
                "%s store unavailable (%s: %s); requests get 503 STORE_UNAVAILABLE until it"
                " answers again",
                self._what,
                type(exc).__name__,
                exc,
            )
        self.refused += 1
        # The database's address and the driver's words stay in the log, not in answers.
        return StoreUnavailable(
            "the conversation store is unavailable; retry in a few seconds",
            retry_after_s=self.retry_after_s,
        )

    def answered(self) -> None:
        """Note a success; ends (and logs the end of) an outage in progress."""
        since = self.down_since
        if since is None:
            return
        self.down_since = None
        log.warning(
            "%s store available again after %.1f s (%d operation(s) refused meanwhile)",
            self._what,
            self._clock() - since,
            self.refused,
        )


class Retry(Enum):
    """What may be run again after the connection broke under it."""

    SAFE = "safe"  # a read, or a write whose second run changes nothing
    UNSENT = "unsent"  # only when the statement certainly never left


Operation = Callable[[Any], Awaitable[T]]


class PoolRunner:
    """Runs store operations on an asyncpg pool through outages (see the module docstring)."""

    def __init__(
        self,
        pool: Callable[[], Any],
        outage: StoreOutage,
        *,
        write_retry_s: float = 20.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._pool = pool
        self.outage = outage
        self.write_retry_s = write_retry_s
        self._clock = clock
        self._sleep = sleep

    async def run(self, op: Operation[T], retry: Retry = Retry.SAFE) -> T:
        """``op(conn)`` on a pooled connection, rerun after a broken one as ``retry`` allows."""
        for attempt in range(1, READ_ATTEMPTS + 1):
            try:
                result = await self._once(op)
            except _Broken as broken:
                # A server that refuses new connections is down: no point asking again now.
                rerun = broken.acquired and (
                    retry is Retry.SAFE or not_sent(broken.cause, broken.closed)
                )
                if not rerun or attempt == READ_ATTEMPTS:
                    raise self.outage.failed(broken.cause) from broken.cause
                await self._replace_connections()
                continue
            self.outage.answered()
            return result
        raise AssertionError("unreachable")  # the loop returns or raises

    async def run_until(self, first: Operation[T], again: Operation[T]) -> T:
        """``first(conn)``; after a connection failure, ``again(conn)`` until it works or time's up.

        ``again`` must be safe whatever became of the earlier attempts (the
        append checks whether its request id is already stored). Used for a
        turn's final write, whose answer the user has already seen.
        """
        give_up = self._clock() + self.write_retry_s
        pause = _FIRST_PAUSE_S
        op = first
        fresh_tried = False
        while True:
            try:
                result = await self._once(op)
            except _Broken as broken:
                op = again
                if broken.acquired:
                    # A killed connection is no outage: new ones, the first time at once.
                    await self._replace_connections()
                    if not fresh_tried:
                        fresh_tried = True
                        continue
                if self._clock() + pause > give_up:
                    raise self.outage.failed(broken.cause) from broken.cause
                if not broken.acquired:  # the server refuses connections: that is an outage
                    self.outage.failed(broken.cause)
                await self._sleep(pause)
                pause = min(pause * 2, _MAX_PAUSE_S)
                continue
            self.outage.answered()
            return result

    async def _once(self, op: Operation[T]) -> T:
        """One attempt; a connection failure becomes ``_Broken``, anything else passes."""
        acquired = closed = done = False
        result: Any = None
        try:
            async with self._pool().acquire() as conn:
                acquired = True
                try:
                    result = await op(conn)
                    done = True
                except Exception:
                    closed = _closed(conn)
                    raise
        except Exception as exc:
            if not connection_failure(exc, closed):
                raise
            if done:  # the work is complete; only handing the connection back failed
                return result  # type: ignore[no-any-return]
            raise _Broken(exc, acquired=acquired, closed=closed) from exc
        return result  # type: ignore[no-any-return]

    async def _replace_connections(self) -> None:
        """A broken connection usually means its idle siblings died too (a restart): renew all."""
        pool = self._pool()
        try:
            await pool.expire_connections()
        except Exception as exc:  # renewing is an optimisation; the next acquire reconnects anyway
            log.debug("could not expire the pool's connections: %s", exc)
