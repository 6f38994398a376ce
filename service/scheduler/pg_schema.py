"""The tables of the shared queue (``scheduler.backend: postgres``), created idempotently.

Every name starts with ``sched_`` so it cannot clash with the store's tables in
the same database. The invariants a buggy dispatcher must not be able to break
are partial unique indexes, not code:

- ``sched_one_per_slot``: one leased row per (provider, host, slot number);
- ``sched_one_turn``: one active turn (granted and not finished, even after its
  slot was released) per conversation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

# The key for pg_advisory_xact_lock every dispatch and admission of the queue in the
# default schema runs under, and its NOTIFY channel; a queue in a schema of its own
# (``?schema=`` on store.url) has its own of both (``scope``).
DISPATCH_LOCK = 0x5C4ED0_0019
CHANNEL = "sched_wake"


@dataclass(frozen=True, slots=True)
class Scope:
    """What makes one queue's replicas one: its dispatch lock key and its wake-up channel.

    Advisory locks and NOTIFY channels belong to the database, not to a schema:
    without a scope of their own, two deployments in two schemas of one database
    (or the tests of a parallel run) would wait for each other's dispatches and
    wake each other's replicas.
    """

    lock_key: int
    channel: str


def scope(schema: str | None) -> Scope:
    """The lock key and channel of the queue in ``schema`` (None: the default schema)."""
    if not schema:
        return Scope(DISPATCH_LOCK, CHANNEL)
    digest = hashlib.blake2b(f"agent-sched:{schema}".encode(), digest_size=8).digest()
    return Scope(int.from_bytes(digest, "big", signed=True), f"{CHANNEL}_{digest.hex()}")


SCHEMA = """
CREATE SEQUENCE IF NOT EXISTS sched_epoch;
CREATE SEQUENCE IF NOT EXISTS sched_seq;
CREATE TABLE IF NOT EXISTS sched_requests (
    user_id          text    NOT NULL,
    request_id       text    NOT NULL,
    owner            text    NOT NULL,            -- the replica that accepted it and runs it
    state            text    NOT NULL,  -- queued | running | completed | cancelled | failed
    priority         integer NOT NULL,
    front            boolean NOT NULL DEFAULT false,  -- put back after a host failure
    order_key        double precision NOT NULL,
    seq              bigint  NOT NULL DEFAULT nextval('sched_seq'),
    conversation_id  text,
    provider         text    NOT NULL,
    model            text    NOT NULL DEFAULT '',
    host             text,                        -- where it runs or ran ('' without a pool)
    slot             integer,                     -- NULL once the slot is released
    granted          boolean NOT NULL DEFAULT false,
    picked_up        boolean NOT NULL DEFAULT false,  -- its replica took the grant upstream
    closed           boolean NOT NULL DEFAULT false,  -- finished: no longer counts anywhere
    lease_epoch      bigint,
    lease_expires_at timestamptz,
    cancel_requested boolean NOT NULL DEFAULT false,
    tried            text[]  NOT NULL DEFAULT '{}',
    error_kind       text,
    error_code       text,
    error_message    text,
    error_reason     text,
    retry_after_s    double precision,
    payload          text    NOT NULL DEFAULT '',  -- what another replica needs to run it
    enqueued_at      double precision NOT NULL,
    started_at       double precision,
    finished_at      double precision,
    PRIMARY KEY (user_id, request_id)
);
ALTER TABLE sched_requests ADD COLUMN IF NOT EXISTS picked_up boolean NOT NULL DEFAULT false;
-- The request's place in its user's spacing (see pg_admission); NULL in rows of older versions.
ALTER TABLE sched_requests ADD COLUMN IF NOT EXISTS vstart double precision;
CREATE UNIQUE INDEX IF NOT EXISTS sched_one_per_slot
    ON sched_requests (provider, host, slot) WHERE slot IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS sched_one_turn
    ON sched_requests (conversation_id)
    WHERE granted AND NOT closed AND conversation_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS sched_waiting
    ON sched_requests (provider, front DESC, order_key, seq) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS sched_open ON sched_requests (user_id) WHERE NOT closed;
-- The slots in use (every dispatch, admission and estimate reads them) and a
-- conversation's open turns, without a scan of the ended rows kept for status.
CREATE INDEX IF NOT EXISTS sched_slots ON sched_requests (provider, host) WHERE slot IS NOT NULL;
CREATE INDEX IF NOT EXISTS sched_open_turns ON sched_requests (conversation_id)
    WHERE NOT closed AND conversation_id IS NOT NULL;
-- What a replica's waiters wait for: a grant not taken yet, or an end before one.
CREATE INDEX IF NOT EXISTS sched_untaken ON sched_requests (owner)
    WHERE granted AND NOT picked_up AND NOT closed;
CREATE INDEX IF NOT EXISTS sched_dropped ON sched_requests (owner, finished_at)
    WHERE closed AND NOT picked_up;
CREATE INDEX IF NOT EXISTS sched_ended ON sched_requests (finished_at) WHERE closed;
CREATE TABLE IF NOT EXISTS sched_users (
    user_id text PRIMARY KEY,
    vstart  double precision NOT NULL  -- virtual start of the user's latest request
);
CREATE TABLE IF NOT EXISTS sched_hosts (
    provider   text NOT NULL,
    name       text NOT NULL,
    up         boolean NOT NULL DEFAULT true,
    since      double precision NOT NULL,
    last_error text NOT NULL DEFAULT '',
    models     text[],                      -- NULL: serves any model
    loaded     text[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (provider, name)
);
CREATE TABLE IF NOT EXISTS sched_replicas (
    replica_id  text PRIMARY KEY,
    expires_at  timestamptz NOT NULL,
    accepting   boolean NOT NULL DEFAULT true,  -- false once it drains: its waiters are adoptable
    address     text NOT NULL DEFAULT ''        -- its gRPC address, for forwarded watches
);
CREATE TABLE IF NOT EXISTS sched_lanes (
    provider        text PRIMARY KEY,
    avg_service_s   double precision NOT NULL,
    service_samples integer NOT NULL DEFAULT 0,
    avg_wait_s      double precision NOT NULL DEFAULT 0,
    wait_samples    integer NOT NULL DEFAULT 0
);
-- A replica beats while its heartbeat is fresh (draining or not): its grants stay its own.
CREATE OR REPLACE FUNCTION sched_beating(replica text) RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM sched_replicas r
                   WHERE r.replica_id = replica AND r.expires_at >= now())
$$;
-- A replica is live while its heartbeat is fresh and it still accepts work.
CREATE OR REPLACE FUNCTION sched_live(replica text) RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM sched_replicas r
                   WHERE r.replica_id = replica AND r.expires_at >= now() AND r.accepting)
$$;
-- How many requests wait, kept by triggers on every statement that moves rows into or
-- out of the queue: the queue cap is checked at each admission without a count over
-- thousands of waiting rows. Created with the triggers, in one transaction.
CREATE TABLE IF NOT EXISTS sched_counts (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    waiting bigint  NOT NULL
);
-- SET search_path FROM CURRENT: the counter of this queue's schema, whatever the search
-- path of the session that writes (a schema-qualified write from elsewhere).
CREATE OR REPLACE FUNCTION sched_count_waiting() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
DECLARE
    delta bigint := 0;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        UPDATE sched_counts SET waiting = 0;
        RETURN NULL;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        delta := delta + (SELECT count(*) FROM new_rows WHERE state = 'queued');
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        delta := delta - (SELECT count(*) FROM old_rows WHERE state = 'queued');
    END IF;
    IF delta <> 0 THEN
        UPDATE sched_counts SET waiting = waiting + delta;
    END IF;
    RETURN NULL;
END
$$;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                   WHERE tgrelid = 'sched_requests'::regclass AND tgname = 'sched_count_in') THEN
        CREATE TRIGGER sched_count_in AFTER INSERT ON sched_requests
            REFERENCING NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION sched_count_waiting();
        CREATE TRIGGER sched_count_moved AFTER UPDATE ON sched_requests
            REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION sched_count_waiting();
        CREATE TRIGGER sched_count_out AFTER DELETE ON sched_requests
            REFERENCING OLD TABLE AS old_rows
            FOR EACH STATEMENT EXECUTE FUNCTION sched_count_waiting();
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'sched_requests'::regclass
                   AND tgname = 'sched_count_emptied') THEN
        CREATE TRIGGER sched_count_emptied AFTER TRUNCATE ON sched_requests
            FOR EACH STATEMENT EXECUTE FUNCTION sched_count_waiting();
    END IF;
END
$$;
-- Counted again at each start (under the lock every move into or out of the queue takes):
-- whatever happened to the table meanwhile, the counter starts exact.
INSERT INTO sched_counts (waiting) SELECT count(*) FROM sched_requests WHERE state = 'queued'
    ON CONFLICT (one) DO UPDATE SET waiting = EXCLUDED.waiting;
"""


async def create_schema(conn: Any, schema: str | None = None) -> None:
    """Create the tables if missing; serialized so replicas starting together do not race.

    ``schema`` (a checked identifier) is created first when given.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", scope(schema).lock_key)
        if schema:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute(SCHEMA)
