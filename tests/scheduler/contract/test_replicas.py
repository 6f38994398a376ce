"""What only the shared queue does: several replicas (instances) on one PostgreSQL database."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from service.errors import Code, RequestCancelled, ServiceUnavailable
from service.scheduler.hosts import Host
from service.scheduler.interface import Admission, Adopted, RequestScheduler, RequestSpec
from service.scheduler.pg_dispatch import rescue
from service.scheduler.pg_schema import scope
from tests.scheduler.contract.conftest import Backend, until

pytestmark = pytest.mark.postgres


async def submit(sched: RequestScheduler, user: str, rid: str, **kw: object) -> Admission:
    return await sched.submit(RequestSpec(rid, user, "ollama", **kw))  # type: ignore[arg-type]


async def state(sched: RequestScheduler, rid: str, user: str) -> str:
    return (await sched.status(rid, user)).state


async def test_two_replicas_share_one_queue_and_its_positions(pg: Backend) -> None:
    a = await pg.replica("a", slots={"ollama": 1})
    b = await pg.replica("b", slots={"ollama": 1})
    await submit(a, "x", "blocker")
    for i in range(6):
        await submit(a if i % 2 else b, f"u{i}", f"r{i}")
    for replica in (a, b):
        assert [(await replica.status(f"r{i}", f"u{i}")).position for i in range(6)] == [
            0,
            1,
            2,
            3,
            4,
            5,
        ]
    assert [i.request_id for i in await b.requests(None)] == ["blocker"] + [
        f"r{i}" for i in range(6)
    ]
    stats = await a.stats()
    assert stats.total_waiting == 6 and stats.total_running == 1


async def test_a_request_is_cancelled_through_another_replica(pg: Backend) -> None:
    a = await pg.replica("a", slots={"ollama": 1})
    b = await pg.replica("b", slots={"ollama": 1})
    first = await submit(a, "alice", "held")
    queued = await submit(a, "bob", "waiting")
    grant = await a.acquire(first)
    waiter = asyncio.create_task(a.acquire(queued))
    await b.cancel("waiting", "bob")
    with pytest.raises(RequestCancelled):
        await waiter
    await b.cancel("held", "alice")
    assert await asyncio.wait_for(grant.signal.stopped(), 10) == "cancelled"
    await a.finish("held", "alice", "completed")
    assert await state(b, "held", "alice") == "cancelled"


async def test_slots_are_never_oversubscribed_when_replicas_dispatch_together(
    pg: Backend,
) -> None:
    settings = {"slots": {"ollama": 2}, "max_pending": 100, "max_pending_per_user": 100}
    replicas = [await pg.replica(f"r{i}", **settings) for i in range(2)]  # type: ignore[arg-type]
    holding = 0
    most = 0
    done: list[str] = []

    async def turn(n: int) -> None:
        nonlocal holding, most
        sched = replicas[n % 2]
        admission = await submit(sched, f"user{n % 10}", f"t{n}")
        grant = await sched.acquire(admission)
        holding += 1
        most = max(most, holding)
        # Hold the slot until another worker holds one too (or nothing is left waiting),
        # so the two slots are both in use while everyone else dispatches.
        await until(lambda: holding >= 2 or _none_waiting(sched))
        holding -= 1
        await sched.release(grant)
        await sched.finish(admission.request_id, admission.user_id, "completed")
        done.append(admission.request_id)

    async with asyncio.timeout(60):
        await asyncio.gather(*(turn(n) for n in range(40)))
    assert sorted(done) == sorted(f"t{n}" for n in range(40))
    assert most == 2
    rows = await pg.sql("SELECT count(*) AS n FROM sched_requests WHERE state = 'completed'")
    assert rows[0]["n"] == 40


async def test_a_replica_silent_past_its_lease_is_fenced_and_cannot_clobber(pg: Backend) -> None:
    # "a" renews its leases only once (a frozen replica); "b" dispatches and rescues. The
    # lease must outlast a's submit and acquire: 0.5 s did not on a loaded machine (the
    # grant was rescued first, and acquire failed), so 2 s.
    a = await pg.replica("a", slots={"ollama": 1}, lease_s=2.0, heartbeat_s=3600)
    b = await pg.replica("b", slots={"ollama": 1})
    mine = await submit(a, "alice", "frozen")
    grant = await a.acquire(mine)
    await submit(b, "bob", "next")
    assert await asyncio.wait_for(grant.signal.stopped(), 10) == "fenced"
    assert isinstance(grant.signal.error, ServiceUnavailable)
    await until(lambda: _is(b, "next", "bob", "running"))
    await a.release(grant)
    await a.finish("frozen", "alice", "completed")
    info = await b.status("frozen", "alice")
    assert info.state == "failed" and info.error is not None
    assert info.error.code is Code.UNAVAILABLE and info.error.retry_after_s
    assert await state(b, "next", "bob") == "running"  # its slot was not taken back
    rows = await pg.sql("SELECT count(*) AS n FROM sched_requests WHERE slot IS NOT NULL")
    assert rows[0]["n"] == 1


async def test_a_dead_replicas_rows_are_rescued_by_another(pg: Backend) -> None:
    # "a" neither renews nor dispatches after its start: it died holding a slot and a waiter.
    dead = await pg.replica("a", slots={"ollama": 1}, lease_s=0.5, heartbeat_s=3600, poll_s=3600)
    b = await pg.replica("b", slots={"ollama": 1})
    await submit(dead, "alice", "started")
    await submit(dead, "carol", "waiting")
    await submit(b, "bob", "survivor")
    await until(lambda: _is(b, "started", "alice", "failed"))
    info = await b.status("started", "alice")
    assert info.error is not None and info.error.retry_after_s is not None  # never run twice
    await until(lambda: _is(b, "waiting", "carol", "failed"))
    await until(lambda: _is(b, "survivor", "bob", "running"))


async def test_a_live_replica_waiting_for_the_dispatch_lock_keeps_its_grant(pg: Backend) -> None:
    # Another session holds the dispatch lock past "a"'s lease (a burst of admissions, a
    # slow disk): a's lease renewal waits for that lock, its heartbeat does not. A rescue
    # run under the lock then must leave a's grant alone; it did not when the heartbeat
    # itself waited for the lock (the grant expired with it and was taken away).
    a = await pg.replica("a", slots={"ollama": 1}, lease_s=1.0, heartbeat_s=0.1)
    admission = await submit(a, "alice", "held")
    grant = await a.acquire(admission)
    conn = await asyncpg.connect(pg.url, server_settings={"search_path": pg.schema})
    try:
        # A session-level hold of the lock, so that each statement below (its own
        # transaction) sees the database's clock move on.
        await conn.execute("SELECT pg_advisory_lock($1)", scope(pg.schema).lock_key)

        async def lease_expired_while_a_beats() -> bool:
            row = await conn.fetchrow(
                "SELECT q.lease_expires_at < now() AS expired, r.expires_at > now() AS beating"
                " FROM sched_requests q JOIN sched_replicas r ON r.replica_id = q.owner"
                " WHERE q.request_id = 'held'"
            )
            return bool(row["expired"] and row["beating"])

        await until(lease_expired_while_a_beats)
        async with conn.transaction():
            assert await rescue(conn, pg.clock()) == 0
        await conn.execute("SELECT pg_advisory_unlock($1)", scope(pg.schema).lock_key)
    finally:
        await conn.close()
    assert not grant.signal.is_stopped
    await a.release(grant)
    await a.finish("held", "alice", "completed")
    assert await state(a, "held", "alice") == "completed"


async def test_queues_in_two_schemas_do_not_wait_for_each_others_lock(pg: Backend) -> None:
    # Advisory locks belong to the database: a queue in another schema of it (another
    # deployment, a parallel test) holding its dispatch lock must not stall this one.
    a = await pg.replica("a", slots={"ollama": 1})
    other = scope(f"{pg.schema}_other")
    assert other.lock_key != scope(pg.schema).lock_key and other.channel != scope(pg.schema).channel
    conn = await asyncpg.connect(pg.url)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", other.lock_key)
        async with asyncio.timeout(10):
            admission = await submit(a, "alice", "free")
            grant = await a.acquire(admission)
        await conn.execute("SELECT pg_advisory_unlock($1)", other.lock_key)
    finally:
        await conn.close()
    await a.release(grant)
    await a.finish("free", "alice", "completed")


async def _none_waiting(sched: RequestScheduler) -> bool:
    return (await sched.stats()).total_waiting == 0


async def _is(sched: RequestScheduler, rid: str, user: str, wanted: str) -> bool:
    return await state(sched, rid, user) == wanted


async def test_a_host_reported_down_by_one_replica_gets_no_work_from_another(pg: Backend) -> None:
    pool = {"ollama": [Host("http://h1", 1), Host("http://h2", 1)]}
    a = await pg.replica("a", slots={}, hosts=pool)
    b = await pg.replica("b", slots={}, hosts=pool)
    await a.report_host("ollama", "http://h1", up=False, error="connection refused")
    first = await submit(b, "alice", "one")
    await submit(b, "bob", "two")
    assert (await b.acquire(first)).backend == "http://h2"
    assert await state(b, "two", "bob") == "queued"  # h1 has a free slot but is down
    h1 = next(h for h in b.hosts("ollama") if h.name == "http://h1")
    assert not h1.up and h1.last_error == "connection refused"
    await a.report_host("ollama", "http://h1", up=True)
    await until(lambda: _is(b, "two", "bob", "running"))
    assert (await b.status("two", "bob")).backend == "http://h1"


async def test_a_replica_restarted_under_its_id_ends_what_its_predecessor_started(
    pg: Backend,
) -> None:
    old = await pg.replica("same", slots={"ollama": 1})
    await submit(old, "alice", "was-running")
    await submit(old, "bob", "was-waiting")
    new = await pg.replica("same", slots={"ollama": 1})  # the old process died unannounced
    for rid, user in (("was-running", "alice"), ("was-waiting", "bob")):
        info = await new.status(rid, user)
        assert info.state == "failed" and info.error is not None
        assert info.error.code is Code.UNAVAILABLE
    await submit(new, "carol", "fresh")
    assert await state(new, "fresh", "carol") == "running"  # the slot was freed


async def test_a_replica_restarted_under_its_id_takes_over_what_its_predecessor_accepted(
    pg: Backend,
) -> None:
    # Under compose a restarted replica has the same id (host name + pid 1), and it
    # comes back well inside its lease: what the old process accepted must not be lost.
    old = await pg.replica("same", slots={"ollama": 2})
    started = await sched_submit_with_payload(old, "alice", "was-running", "alice's turn")
    await old.acquire(started)  # taken upstream: it may have reached the provider
    await sched_submit_with_payload(old, "erin", "granted-unused", "erin's turn")
    await sched_submit_with_payload(old, "bob", "was-waiting", "bob's turn")
    await submit(old, "dave", "no-payload")
    new = await pg.replica("same", slots={"ollama": 2})
    for rid, user in (("was-running", "alice"), ("no-payload", "dave")):
        info = await new.status(rid, user)
        assert info.state == "failed" and info.error is not None
        assert info.error.code is Code.UNAVAILABLE
    adopted = await new.adopt()
    # The grant never taken upstream goes first: it had its turn already.
    assert [(a.admission.request_id, a.payload) for a in adopted] == [
        ("granted-unused", "erin's turn"),
        ("was-waiting", "bob's turn"),
    ]
    for taken in adopted:
        assert (await new.status(taken.admission.request_id, taken.admission.user_id)).owner == (
            "same"
        )
        grant = await new.acquire(taken.admission)
        assert grant.request_id == taken.admission.request_id
    assert await new.adopt() == []


async def test_a_replica_shutting_down_ends_only_its_own_waiting_requests(pg: Backend) -> None:
    a = await pg.replica("a", slots={"ollama": 1})
    b = await pg.replica("b", slots={"ollama": 1})
    await submit(b, "x", "running-on-b")
    await submit(a, "alice", "waiting-on-a")
    await submit(b, "bob", "waiting-on-b")
    await a.begin_shutdown("replica a is stopping")
    assert await state(b, "waiting-on-a", "alice") == "failed"
    assert await state(a, "waiting-on-b", "bob") == "queued"
    with pytest.raises(ServiceUnavailable):
        await submit(a, "carol", "refused")
    await submit(b, "carol", "accepted-by-b")
    assert await a.drain(5.0) is True  # a has nothing left open
    await b.finish("running-on-b", "x", "completed")
    assert await state(a, "waiting-on-b", "bob") == "running"


async def test_concurrent_cancels_on_a_small_pool_do_not_deadlock(pg: Backend) -> None:
    # Each locked operation must use only its own connection: waiters on the lock fill the pool.
    sched = await pg.replica("small", slots={"ollama": 1}, pool_size=2, max_pending_per_user=50)
    await submit(sched, "x", "blocker")
    for i in range(8):
        await submit(sched, "alice", f"w{i}")
    async with asyncio.timeout(20):
        infos = await asyncio.gather(*(sched.cancel(f"w{i}", "alice") for i in range(8)))
    assert {i.state for i in infos} == {"cancelled"}


async def test_a_gone_replicas_waiting_request_with_a_payload_is_adopted_not_run_blind(
    pg: Backend,
) -> None:
    dead = await pg.replica("a", slots={"ollama": 1}, lease_s=0.5, heartbeat_s=3600, poll_s=3600)
    b = await pg.replica("b", slots={"ollama": 1})
    await submit(b, "x", "running-on-b")
    await sched_submit_with_payload(dead, "alice", "orphan", "the turn's input")
    await submit(dead, "carol", "no-payload")
    adopted: list[Adopted] = []

    async def adopt_some() -> bool:
        adopted.extend(await b.adopt())
        return bool(adopted)

    await until(adopt_some)
    assert [(a.admission.request_id, a.payload) for a in adopted] == [
        ("orphan", "the turn's input")
    ]
    assert (await b.status("orphan", "alice")).owner == "b"
    await until(lambda: _is(b, "no-payload", "carol", "failed"))  # nobody could run it
    await b.finish("running-on-b", "x", "completed")
    grant = await b.acquire(adopted[0].admission)
    assert grant.request_id == "orphan"
    assert await b.adopt() == []


async def test_a_draining_replicas_waiting_requests_are_handed_over(pg: Backend) -> None:
    a = await pg.replica("a", slots={"ollama": 1}, address="127.0.0.1:5001")
    b = await pg.replica("b", slots={"ollama": 1}, address="127.0.0.1:5002")
    await submit(b, "x", "running-on-b")
    waiting = await sched_submit_with_payload(a, "alice", "handed", "input")
    assert not waiting.granted
    waiter = asyncio.create_task(a.acquire(waiting))
    assert await b.replica_address("a") == "127.0.0.1:5001"
    assert await b.replica_address("nobody") is None
    assert (await b.status("handed", "alice")).owner == "a"
    await a.begin_shutdown("a drains")
    (taken,) = await b.adopt()
    assert taken.admission.request_id == "handed"
    with pytest.raises(ServiceUnavailable):
        await waiter  # the drained replica's stream ends; the client re-attaches elsewhere
    await a.finish("handed", "alice", "cancelled")  # its finally: not its row any more
    assert await state(b, "handed", "alice") == "queued"
    assert await a.drain(5.0) is True


async def sched_submit_with_payload(
    sched: RequestScheduler, user: str, rid: str, payload: str
) -> Admission:
    return await sched.submit(RequestSpec(rid, user, "ollama", payload=payload))


async def test_a_grant_a_dead_replica_never_took_upstream_is_run_by_another(
    pg: Backend,
) -> None:
    dead = await pg.replica("a", slots={"ollama": 1}, lease_s=0.5, heartbeat_s=3600, poll_s=3600)
    granted = await sched_submit_with_payload(dead, "alice", "granted", "alice's turn")
    assert granted.granted  # the slot was free: granted, but the replica died before acquire
    b = await pg.replica("b", slots={"ollama": 1})
    adopted: list[Adopted] = []

    async def adopt_some() -> bool:
        adopted.extend(await b.adopt())
        return bool(adopted)

    await until(adopt_some)  # after the lease ran out on the database's clock
    assert [a.admission.request_id for a in adopted] == ["granted"]
    info = await b.status("granted", "alice")
    assert info.owner == "b" and info.error is None  # not failed: it never reached the provider
    grant = await b.acquire(adopted[0].admission)
    assert grant.request_id == "granted"


async def test_the_published_address_outlives_the_heartbeat(pg: Backend) -> None:
    # The service publishes its address once its port is bound, after the scheduler
    # started; a heartbeat that wrote the address it was built with put "" back.
    a = await pg.replica("a", slots={"ollama": 1}, lease_s=0.6)
    b = await pg.replica("b", slots={"ollama": 1}, lease_s=0.6)
    await a.publish_address("10.0.0.5:50051")
    first = (await pg.sql("SELECT expires_at FROM sched_replicas WHERE replica_id = 'a'"))[0]

    async def beaten_since() -> bool:
        rows = await pg.sql("SELECT expires_at FROM sched_replicas WHERE replica_id = 'a'")
        return bool(rows[0]["expires_at"] > first["expires_at"])

    await until(beaten_since)
    assert await b.replica_address("a") == "10.0.0.5:50051"


async def test_a_replica_whose_renewal_is_stuck_lets_its_grants_go(pg: Backend) -> None:
    # Its event loop and heartbeat connection are fine, but its lease renewal no longer
    # runs (a wedged pool, a bug): its heartbeat lapses after a few leases, so its slot
    # goes to another replica's request instead of being held for good.
    a = await pg.replica("a", slots={"ollama": 1}, lease_s=0.5)
    b = await pg.replica("b", slots={"ollama": 1}, lease_s=0.5)
    grant = await a.acquire(await submit(a, "u", "stuck"))
    assert a._renewal is not None
    a._renewal.cancel()
    await submit(b, "v", "next")
    await until(lambda: _is(b, "next", "v", "running"))
    assert await state(b, "stuck", "u") == "failed"  # never run twice
    assert await asyncio.wait_for(grant.signal.stopped(), 10) == "fenced"


async def test_a_request_no_host_serves_any_more_fails_while_its_lane_is_full(
    pg: Backend,
) -> None:
    hosts = {"ollama": [Host("h1", 1), Host("h2", 1)]}
    a = await pg.replica("a", slots={}, hosts=hosts)
    await a.report_host("ollama", "h1", up=True, models=["m1"])
    await a.report_host("ollama", "h2", up=True, models=["m1", "m2"])
    for rid, model in (("r1", "m1"), ("r2", "m2")):
        assert (await a.submit(RequestSpec(rid, "u", "ollama", model=model))).granted
    assert not (await a.submit(RequestSpec("w", "u", "ollama", model="m2"))).granted
    # h2 stops serving m2, both hosts up and busy: nothing will ever run "w".
    await a.report_host("ollama", "h2", up=True, models=["m1"])
    await until(lambda: _is(a, "w", "u", "failed"))
    info = await a.status("w", "u")
    assert info.error is not None and "m2" in info.error.message
