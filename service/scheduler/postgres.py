"""The PostgreSQL adapter of ``RequestScheduler``: one queue shared by several service replicas.

Requests are rows of ``sched_requests`` (``service.scheduler.pg_schema``).
The replica that accepts a request runs it; the shared queue decides when,
by granting a numbered (host, slot) under a lease (DESIGN §9):

- admission checks the caps and inserts the row with a static order key
  (``service.scheduler.pg_admission`` documents the rule), under the same
  advisory lock as dispatch, so limits hold across replicas exactly;
- dispatch (``pg_dispatch``) hands free slots to eligible rows in order;
  every replica runs it when woken by LISTEN/NOTIFY or its safety poll;
- each grant carries a new epoch; a heartbeat renews this replica's leases
  every ``lease_s / 3`` on the database's clock, and a renewal, release or
  finish that finds its epoch gone fires the grant's signal ("fenced");
- a silent replica's grants are ended failed with a retry hint by whichever
  replica dispatches next (every granted row counts as started upstream);
  its waiting rows are taken over by a live replica (``adopt``: they carry
  their input), or end failed when they carry none. A draining replica's
  waiting rows are adoptable the same way.

Times in rows (``enqueued_at``, order keys, retention) come from ``clock``
(the replica's wall clock, injectable for tests); lease expiry uses only the
database's ``now()``. The order rule is the in-process engine's to the letter
(``service/scheduler/queue.py``); the one difference is that a conversation's
previous host is not preferred (that affinity is per process).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterable, Sequence
from typing import Any

from service.errors import Reason, ServiceUnavailable
from service.scheduler.hosts import HostView
from service.scheduler.interface import Admission, Adopted, RequestSpec
from service.scheduler.pg_admission import admit
from service.scheduler.pg_core import CONNECTION_LOST, UNREACHABLE
from service.scheduler.pg_directory import Directory
from service.scheduler.pg_hosts import load_hosts, write_host
from service.scheduler.pg_leases import wait_for
from service.scheduler.pg_requests import Requests


class PostgresScheduler(Requests, Directory):
    """``RequestScheduler`` over PostgreSQL (asyncpg); one instance per service replica.

    Built with the same ``slots`` / ``hosts`` configuration on every replica (as
    the in-process ``Scheduler``) plus the database's DSN and this replica's id;
    ``schema`` (tests) puts the tables in their own schema. ``open()`` before
    use, ``close()`` after.
    """

    # -- hosts ------------------------------------------------------------------------------

    async def report_host(
        self,
        provider: str,
        name: str,
        *,
        up: bool,
        error: str = "",
        loaded: Iterable[str] | None = None,
        models: Iterable[str] | None = None,
    ) -> None:
        if all(h.name != name for h in self._pools.get(provider, ())):
            raise KeyError(f"{provider} has no host {name!r}")
        async with self._locked() as conn:
            changed = await write_host(
                conn,
                provider,
                name,
                up=up,
                error=error,
                loaded=loaded,
                models=models,
                now=self._clock(),
            )
            if changed:  # its models may have changed: look at every lane
                await self._dispatch(conn, every_lane=True)
            else:
                self._hosts = await load_hosts(conn, self._pools)
        if changed and not up:
            for held in self._held.values():
                if held.host == name and not held.signal.is_host_lost:
                    held.signal.lose_host()

    def hosts(self, provider: str) -> Sequence[HostView]:
        """The hosts as this replica last saw them (refreshed on every report and dispatch)."""
        states = self._hosts.get(provider)
        if states is None:
            return tuple(
                HostView(h.name, h.slots, h.up, 0, h.models, h.loaded, h.last_error, h.since)
                for h in self._pools[provider]
            )
        return tuple(h.view(self._running.get((provider, h.name), 0)) for h in states)

    # -- admission --------------------------------------------------------------------------

    async def submit(self, spec: RequestSpec) -> Admission:
        if self._closing is not None:
            raise ServiceUnavailable(self._closing)
        try:
            async with self._locked() as conn:
                row, hosts = await admit(
                    conn,
                    spec,
                    pools=self._pools,
                    rules=self._rules,
                    owner=self.replica_id,
                    now=self._clock(),
                )
                done = await self._dispatch(conn, hosts=hosts)
                granted = (spec.user_id, spec.request_id) in done.started
        except UNREACHABLE as exc:
            raise ServiceUnavailable(
                f"the shared queue's database cannot be reached ({type(exc).__name__}); "
                "retry shortly",
                retry_after_s=2.0,
            ) from exc
        self._announce()
        return Admission(
            request_id=row["request_id"],
            user_id=row["user_id"],
            provider=row["provider"],
            model=row["model"],
            priority=row["priority"],
            conversation_id=row["conversation_id"],
            enqueued_at=row["enqueued_at"],
            granted=granted,
        )

    # -- replicas ---------------------------------------------------------------------------

    async def adopt(self, limit: int = 50) -> list[Adopted]:
        """Take over waiting requests (with a payload) of replicas that went away or drain.

        The rows become this replica's, in queue order; their places in the queue
        do not change. A replica that is shutting down adopts nothing.
        """
        if self._closing is not None:
            return []
        async with self._locked() as conn:
            rows = await conn.fetch(
                "UPDATE sched_requests SET owner = $1 WHERE (user_id, request_id) IN"
                " (SELECT user_id, request_id FROM sched_requests"
                "  WHERE state = 'queued' AND payload <> '' AND owner <> $1"
                "  AND NOT sched_live(owner) ORDER BY front DESC, order_key, seq LIMIT $2)"
                " RETURNING *",
                self.replica_id,
                limit,
            )
            if rows:
                await self._dispatch(conn)
        if rows:
            self._announce()
        return [
            Adopted(
                Admission(
                    request_id=r["request_id"],
                    user_id=r["user_id"],
                    provider=r["provider"],
                    model=r["model"],
                    priority=r["priority"],
                    conversation_id=r["conversation_id"],
                    enqueued_at=r["enqueued_at"],
                ),
                r["payload"],
            )
            for r in sorted(rows, key=lambda r: (not r["front"], r["order_key"], r["seq"]))
        ]

    async def publish_address(self, address: str) -> None:
        """Tell the other replicas where this one listens (known once its port is bound)."""
        self.address = address
        await self._pool.execute(
            "UPDATE sched_replicas SET address = $2 WHERE replica_id = $1",
            self.replica_id,
            address,
        )

    async def replica_address(self, replica: str) -> str | None:
        """The gRPC address of a live replica (None: unknown, gone, or it gave none)."""
        address = await self._pool.fetchval(
            "SELECT address FROM sched_replicas WHERE replica_id = $1 AND expires_at >= now()",
            replica,
        )
        return address or None

    # -- the service as a whole ------------------------------------------------------------

    async def begin_shutdown(self, message: str = "service is shutting down") -> None:
        """Stop admitting on this replica and hand its waiting requests over.

        Those with a payload are left for another replica to adopt; the others
        (nobody else could run them) end UNAVAILABLE. Other replicas' requests
        go on being dispatched.
        """
        self._closing = message
        async with self._locked() as conn:
            await conn.execute(
                "UPDATE sched_requests SET state = 'failed', closed = true, finished_at = $2,"
                " error_kind = 'ServiceUnavailable', error_code = 'UNAVAILABLE',"
                " error_message = $3 WHERE owner = $1 AND state = 'queued' AND payload = ''",
                self.replica_id,
                self._clock(),
                message,
            )
            await conn.execute(
                "UPDATE sched_replicas SET accepting = false WHERE replica_id = $1",
                self.replica_id,
            )
            await self._dispatch(conn)
        self._announce()

    async def drain(self, timeout: float) -> bool:  # noqa: ASYNC109 (False on timeout, no raise)
        """Wait until this replica has no open request (True), or ``timeout`` seconds (False)."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    event = self._changed.current()
                    left = await self._pool.fetchval(
                        "SELECT count(*) FROM sched_requests WHERE owner = $1 AND NOT closed",
                        self.replica_id,
                    )
                    if not left:
                        return True
                    await wait_for(event, self._poll_s)
        except TimeoutError:
            return False


def _answering_when_unreachable(name: str) -> None:
    """Make ``PostgresScheduler.<name>`` answer UNAVAILABLE with a retry hint while the
    database cannot be reached, instead of letting a driver error become INTERNAL."""
    method = getattr(PostgresScheduler, name)

    @functools.wraps(method)
    async def guarded(self: PostgresScheduler, *args: Any, **kwargs: Any) -> Any:
        try:
            return await method(self, *args, **kwargs)
        except CONNECTION_LOST as exc:
            raise ServiceUnavailable(
                "the shared queue's database cannot be reached; retry shortly",
                retry_after_s=2.0,
                reason=Reason.STORE_UNAVAILABLE,
            ) from exc

    setattr(PostgresScheduler, name, guarded)


# What callers reach through the directory and the holder's side, outside acquire (which
# rides out an outage by itself) and the background rounds (which log and go on).
for _name in (
    "submit",
    "cancel",
    "find",
    "status",
    "requests",
    "stats",
    "report_host",
    "adopt",
    "replica_address",
    "release",
    "put_back",
    "finish",
    "begin_shutdown",
):
    _answering_when_unreachable(_name)


__all__ = ["PostgresScheduler"]
