"""PoolRunner and StoreOutage at their seam: a pool of scripted connections, a fake clock.

What may run twice: reads and idempotent writes after a broken connection;
other writes only when the statement certainly never left; a turn's append
until its time is up. Errors that are not about the connection pass untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
from asyncpg import exceptions as pgerr

from service.errors import NotFound, Reason, StoreUnavailable
from service.store.postgres_outage import READ_ATTEMPTS, PoolRunner, Retry, StoreOutage


@dataclass
class _Conn:
    closed: bool = False

    def is_closed(self) -> bool:
        return self.closed


@dataclass
class _Pool:
    """Hands out connections; ``refuse`` makes acquiring fail as a server that is down does."""

    refuse: bool = False
    handed: list[_Conn] = field(default_factory=list)
    expired: int = 0

    def acquire(self) -> Any:
        pool = self

        class _Use:
            async def __aenter__(self) -> _Conn:
                if pool.refuse:
                    raise ConnectionRefusedError(111, "Connection refused")
                conn = _Conn()
                pool.handed.append(conn)
                return conn

            async def __aexit__(self, *exc: object) -> None:
                return None

        return _Use()

    async def expire_connections(self) -> None:
        self.expired += 1


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def _runner(pool: _Pool, clock: _Clock, write_retry_s: float = 5.0) -> PoolRunner:
    outage = StoreOutage(clock=clock)
    return PoolRunner(
        lambda: pool, outage, write_retry_s=write_retry_s, clock=clock, sleep=clock.sleep
    )


def _failing(times: int, error: Callable[[_Conn], BaseException]) -> Any:
    calls: list[_Conn] = []

    async def op(conn: _Conn) -> str:
        calls.append(conn)
        if len(calls) <= times:
            raise error(conn)
        return "answer"

    op.calls = calls  # type: ignore[attr-defined]
    return op


def _killed_mid_statement(conn: _Conn) -> BaseException:
    conn.closed = True
    return pgerr.ConnectionDoesNotExistError("connection was closed in the middle of operation")


def _found_closed(conn: _Conn) -> BaseException:
    conn.closed = True  # killed while idle: asyncpg refuses before sending anything
    return asyncpg.InterfaceError("connection is closed")


async def test_a_read_on_a_killed_connection_is_rerun_on_a_fresh_one() -> None:
    pool, clock = _Pool(), _Clock()
    runner = _runner(pool, clock)
    op = _failing(1, _killed_mid_statement)
    assert await runner.run(op) == "answer"
    assert len(op.calls) == 2 and op.calls[0] is not op.calls[1]
    assert pool.expired == 1  # its idle siblings are renewed too
    assert not runner.outage.down


async def test_reads_give_up_after_a_bounded_number_of_attempts() -> None:
    pool, clock = _Pool(), _Clock()
    runner = _runner(pool, clock)
    op = _failing(99, _killed_mid_statement)
    with pytest.raises(StoreUnavailable) as caught:
        await runner.run(op)
    assert len(op.calls) == READ_ATTEMPTS
    assert caught.value.reason is Reason.STORE_UNAVAILABLE and caught.value.retry_after_s


async def test_a_write_that_may_have_landed_is_not_rerun() -> None:
    pool, clock = _Pool(), _Clock()
    runner = _runner(pool, clock)
    op = _failing(1, _killed_mid_statement)
    with pytest.raises(StoreUnavailable):
        await runner.run(op, Retry.UNSENT)
    assert len(op.calls) == 1


async def test_a_write_that_never_left_is_rerun() -> None:
    pool, clock = _Pool(), _Clock()
    runner = _runner(pool, clock)
    op = _failing(1, _found_closed)
    assert await runner.run(op, Retry.UNSENT) == "answer"
    assert len(op.calls) == 2


async def test_a_server_that_is_down_is_not_asked_again_and_other_errors_pass() -> None:
    pool, clock = _Pool(refuse=True), _Clock()
    runner = _runner(pool, clock)
    with pytest.raises(StoreUnavailable):
        await runner.run(_failing(0, _found_closed))
    assert clock.now == 100.0  # answered at once, no waiting
    pool.refuse = False

    async def missing(conn: _Conn) -> None:
        raise NotFound("conversation 'x' not found")

    with pytest.raises(NotFound):
        await runner.run(missing)

    async def bad_sql(conn: _Conn) -> None:
        raise pgerr.UndefinedTableError('relation "nope" does not exist')

    with pytest.raises(pgerr.UndefinedTableError):
        await runner.run(bad_sql)


async def test_an_append_waits_for_its_time_then_gives_up() -> None:
    pool, clock = _Pool(refuse=True), _Clock()
    runner = _runner(pool, clock, write_retry_s=5.0)
    first = _failing(0, _found_closed)
    again = _failing(0, _found_closed)
    with pytest.raises(StoreUnavailable):
        await runner.run_until(first, again)
    assert 100.0 + 4.0 <= clock.now <= 100.0 + 5.0  # waited (on the fake clock), bounded


async def test_an_append_after_a_broken_first_attempt_runs_its_careful_variant() -> None:
    pool, clock = _Pool(), _Clock()
    runner = _runner(pool, clock)
    first = _failing(99, _killed_mid_statement)
    again = _failing(0, _found_closed)
    assert await runner.run_until(first, again) == "answer"
    assert len(first.calls) == 1 and len(again.calls) == 1
    assert clock.now == 100.0  # a killed connection is replaced at once, without waiting
    assert runner.outage.down_since is None and runner.outage.refused == 0  # and is no outage


async def test_an_append_keeps_trying_through_repeatedly_killed_connections() -> None:
    pool, clock = _Pool(), _Clock()
    runner = _runner(pool, clock, write_retry_s=30.0)
    first = _failing(99, _killed_mid_statement)
    again = _failing(4, _killed_mid_statement)
    assert await runner.run_until(first, again) == "answer"
    assert len(again.calls) == 5 and pool.expired == 5
    assert runner.outage.refused == 0


def test_an_outage_is_logged_once_and_its_end_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="service.store.postgres_outage")
    clock = _Clock()
    outage = StoreOutage(clock=clock)
    outage.answered()  # no outage: nothing to say
    for _ in range(50):
        error = outage.failed(ConnectionRefusedError(111, "Connection refused"))
        assert error.reason is Reason.STORE_UNAVAILABLE
    clock.now += 6.0
    outage.answered()
    outage.answered()
    levels = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in levels] == [logging.ERROR, logging.WARNING], levels
    assert "6.0 s" in levels[1][1] and "50 operation" in levels[1][1]
