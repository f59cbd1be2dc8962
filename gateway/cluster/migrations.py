"""The cluster's schema, created and migrated by the nodes themselves: numbered steps applied
in order, each recorded in `lyncgate_migrations`, under an advisory lock so that nodes
starting together apply each step once. Operators run no SQL."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

# Any constant shared by every node: the lock that serialises migrations.
LOCK_KEY = 0x6C796E63  # "lync"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "nodes, CDRs, bindings, PIN failures, config generations", """
CREATE TABLE nodes (
    name text PRIMARY KEY,
    address text NOT NULL,
    location text NOT NULL,
    version text NOT NULL,
    load integer NOT NULL DEFAULT 0,             -- calls in progress
    heartbeat_seconds integer NOT NULL,
    heartbeat timestamptz NOT NULL,
    started timestamptz NOT NULL,
    state text NOT NULL DEFAULT 'up',            -- up | gone
    config_generation bigint NOT NULL DEFAULT 0  -- the shared config in force there
);
CREATE TABLE cdr (
    node text NOT NULL,
    in_call_id text NOT NULL,
    started double precision NOT NULL,           -- with node and Call-ID, the call's key
    out_call_id text,
    caller text NOT NULL,
    alias text NOT NULL,
    outcome text NOT NULL,
    service text,
    rule text,
    destination text,
    ringing double precision,
    answered double precision,
    ended double precision NOT NULL,
    end_cause text NOT NULL,
    ended_by text NOT NULL,
    media text,
    video text,
    PRIMARY KEY (node, in_call_id, started)
);
CREATE INDEX cdr_started ON cdr (started);
CREATE TABLE cdr_open (
    node text NOT NULL,
    key bigint NOT NULL,
    record jsonb NOT NULL,
    PRIMARY KEY (node, key)
);
CREATE TABLE bindings (
    aor text NOT NULL,
    contact text NOT NULL,
    node text NOT NULL,                          -- the node holding the device's flow
    expires_at double precision NOT NULL,
    transport text NOT NULL,
    host text NOT NULL,
    port integer NOT NULL,
    call_id text NOT NULL,
    cseq integer NOT NULL,
    PRIMARY KEY (aor, contact)
);
CREATE TABLE pin_failures (
    id bigserial PRIMARY KEY,
    source text NOT NULL,
    at double precision NOT NULL,
    node text NOT NULL
);
CREATE INDEX pin_failures_at ON pin_failures (at);
CREATE TABLE config_generations (
    generation bigserial PRIMARY KEY,
    text text NOT NULL,
    source text NOT NULL,
    pushed timestamptz NOT NULL DEFAULT now()
);
"""),
    Migration(2, "each node's node-to-node SIP port", """
ALTER TABLE nodes ADD COLUMN port integer NOT NULL DEFAULT 0;  -- 0: takes no calls from nodes
"""),
    Migration(3, "the CDR's Lync meeting column", """
ALTER TABLE cdr ADD COLUMN meeting text;      -- a Lync meeting joined: JSON, as in SQLite
"""),
)


async def migrate(conn: asyncpg.Connection) -> list[int]:
    """Apply the steps this database lacks; the versions applied, in order."""
    applied: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
        await conn.execute("CREATE TABLE IF NOT EXISTS lyncgate_migrations ("
                           "version integer PRIMARY KEY, description text NOT NULL, "
                           "applied timestamptz NOT NULL DEFAULT now())")
        done = {row["version"] for row in
                await conn.fetch("SELECT version FROM lyncgate_migrations")}
        for step in MIGRATIONS:
            if step.version in done:
                continue
            await conn.execute(step.sql)
            await conn.execute("INSERT INTO lyncgate_migrations (version, description) "
                               "VALUES ($1, $2)", step.version, step.description)
            applied.append(step.version)
    return applied
