"""This node's membership of the cluster, on the daemon's event loop: one asyncpg
connection, (re)opened as PostgreSQL comes and goes, on which the node heartbeats, marks
silent nodes gone, ships its CDRs and binding changes, reports wrong PINs, and LISTENs for
the other nodes' bindings and PINs and for new config generations.

Nothing on a call's path waits for PostgreSQL: call control reads what this keeps in memory
(bindings, the nodes' loads) and hands changes to outboxes this drains. While PostgreSQL is
away, the node routes from what it holds and its CDRs wait in its SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from gateway import __version__, logs
from gateway.calls.pin_guard import PinGuard, PinPolicy
from gateway.calls.registrar import Binding
from gateway.cluster.bindings import SharedBindings
from gateway.cluster.cdr_queue import INSERT as INSERT_CDR
from gateway.cluster.cdr_queue import LOST_CAUSE, CdrQueue
from gateway.cluster.generations import Generation, save, saved, shared_part
from gateway.cluster.migrations import migrate
from gateway.cluster.view import MISSED_HEARTBEATS, ClusterView, NodeRow
from gateway.config.errors import ConfigError
from gateway.config.schema import Config

log = logs.get(__name__)

CONFIG_CHANNEL, BINDING_CHANNEL, PIN_CHANNEL = "lyncgate_config", "lyncgate_binding", "lyncgate_pin"
# How often the outboxes and the CDR queue are looked at between heartbeats.
PASS_S = 0.2
CONNECT_TIMEOUT_S = 5.0
QUERY_TIMEOUT_S = 10.0
DB_DOWN = (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)

_HEARTBEAT = """
WITH old AS (SELECT state FROM nodes WHERE name = $1)
INSERT INTO nodes (name, address, location, version, load, heartbeat_seconds, heartbeat,
                   started, state, config_generation, port)
VALUES ($1, $2, $3, $4, $5, $6, now(), to_timestamp($7), 'up', $8, $9)
ON CONFLICT (name) DO UPDATE SET address = EXCLUDED.address, port = EXCLUDED.port,
    location = EXCLUDED.location,
    version = EXCLUDED.version, load = EXCLUDED.load,
    heartbeat_seconds = EXCLUDED.heartbeat_seconds, heartbeat = now(),
    started = EXCLUDED.started, state = 'up', config_generation = EXCLUDED.config_generation
RETURNING (SELECT state FROM old)
"""
# Three heartbeats missed, and this node connected long enough to have seen them: after an
# outage of PostgreSQL itself every heartbeat is old, and the first node back must not take
# the others for dead.
_MARK_GONE = f"""
UPDATE nodes SET state = 'gone'
WHERE state = 'up' AND name <> $1
  AND heartbeat < now() - heartbeat_seconds * {MISSED_HEARTBEATS} * interval '1 second'
  AND $2::timestamptz < now() - heartbeat_seconds * {MISSED_HEARTBEATS} * interval '1 second'
RETURNING name
"""
_CLOSE_LOST = f"""
INSERT INTO cdr (node, in_call_id, started, out_call_id, caller, alias, outcome, service,
                 rule, destination, ringing, answered, ended, end_cause, ended_by, media, video,
                 meeting)
SELECT node, record->>'in_call_id', (record->>'started')::float8, record->>'out_call_id',
       record->>'caller', record->>'alias', record->>'outcome', record->>'service',
       record->>'rule', record->>'destination', (record->>'ringing')::float8,
       (record->>'answered')::float8, extract(epoch from now()), '{LOST_CAUSE}', 'gateway',
       CASE WHEN record->'media' = '{{}}'::jsonb THEN NULL ELSE record->>'media' END,
       record->>'video', record->>'meeting'
FROM cdr_open WHERE node = ANY($1::text[])
ON CONFLICT (node, in_call_id, started) DO NOTHING
"""
NODES_QUERY = """
SELECT name, address, location, version, load, heartbeat_seconds,
       extract(epoch from heartbeat) AS heartbeat, extract(epoch from started) AS started,
       state, config_generation, port FROM nodes ORDER BY name
"""
_SAVE_BINDING = """
INSERT INTO bindings (aor, contact, node, expires_at, transport, host, port, call_id, cseq)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (aor, contact) DO UPDATE SET node = EXCLUDED.node,
    expires_at = EXCLUDED.expires_at, transport = EXCLUDED.transport, host = EXCLUDED.host,
    port = EXCLUDED.port, call_id = EXCLUDED.call_id, cseq = EXCLUDED.cseq
WHERE bindings.expires_at <= EXCLUDED.expires_at
"""


@dataclass
class Hooks:
    """What the node lends its membership."""

    load: Callable[[], int]  # calls in progress here
    # Take a shared config generation; the problems that refused it ([] = in force).
    apply_config: Callable[[int, dict[str, Any]], list[str]]
    pin_policy: Callable[[], PinPolicy]
    loop_time: Callable[[], float]
    link_port: Callable[[], int]  # the node-to-node listener's port (0: none open)


@dataclass
class Health:
    connected: bool = False
    error: str = ""
    generation: int = 0  # the shared config generation in force here (0: local file only)
    refused_generation: int = 0
    cdrs_shipped: int = 0
    lost_nodes: list[str] = field(default_factory=list)
    failed_passes: int = 0  # passes ended by an error nobody expected (logged, retried)


class Member:
    def __init__(self, config: Config, view: ClusterView, bindings: SharedBindings,
                 cdr_path: Path | None, guard: PinGuard, hooks: Hooks,
                 generation_path: Path) -> None:
        assert config.cluster is not None
        self.cluster = config.cluster
        self.node = config.node
        self.view = view
        self.bindings = bindings
        self.guard = guard
        self.hooks = hooks
        self.health = Health()
        self.started = time.time()
        self.queue = CdrQueue(cdr_path) if cdr_path is not None else None
        self.generation_path = generation_path  # the generation in force, kept on disk
        self.pins_out: list[tuple[str, float]] = []
        guard.on_failed = self._pin_failed
        self._conn: asyncpg.Connection | None = None
        self._connected_at: Any = None  # PostgreSQL's now() when this connection opened
        self._mirrored: dict[int, str] | None = None  # open CDRs as PostgreSQL has them
        self._pin_seen = 0
        self._config_due = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._next_heartbeat = 0.0

    def configure(self, config: Config) -> None:
        """A reload: only what takes effect live (the rest of [cluster] on restart)."""
        if config.cluster is not None:
            self.cluster = config.cluster

    # -- life cycle -----------------------------------------------------------------------
    def restore(self) -> None:
        """The generation in force when the node last ran, taken before it listens: whether
        or not PostgreSQL answers, the node starts on the cluster's config; a newer one is
        loaded when the database is reached."""
        try:
            last = saved(self.generation_path)
            problems = self._apply(last) if last is not None else []
        except ConfigError as exc:
            last, problems = None, exc.problems
        if problems:
            log.error("cluster_config_not_restored", path=str(self.generation_path),
                      problems=problems, note="running on the local file until the "
                      "cluster's database gives a generation")
        elif last is not None:
            self.health.generation = last.number
            log.info("cluster_config_restored", generation=last.number,
                     path=str(self.generation_path))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="cluster")

    async def stop(self) -> None:
        """A last pass to ship what is queued (briefly: PostgreSQL may be away), then close.
        The node stays in the table as up: its heartbeats stop and the others see it gone."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._conn is not None and not self._conn.is_closed():
            try:
                await asyncio.wait_for(self._drain(self._conn), 3.0)
            except DB_DOWN as exc:
                log.warning("cluster_final_ship_failed", error=str(exc),
                            note="the node's SQLite keeps them for its next start")
            await self._conn.close(timeout=2.0)
        self._conn = None
        if self.queue is not None:
            self.queue.close()

    def nudge(self) -> None:
        self._wake.set()

    def _pin_failed(self, source: str) -> None:
        self.pins_out.append((source, time.time()))
        self._wake.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()  # what asks for a pass from here on gets one
            try:
                if self._conn is None or self._conn.is_closed():
                    await self._connect()
                conn = self._conn
                assert conn is not None
                if loop.time() >= self._next_heartbeat:
                    self._next_heartbeat = loop.time() + self.cluster.heartbeat_seconds
                    await self._heartbeat(conn)
                await self._drain(conn)
                if self._config_due:
                    await self._load_config(conn)
            except DB_DOWN as exc:
                self._lost(exc)
            except Exception as exc:
                # An error no pass expected (a busy SQLite queue, a bug) must not end the
                # task silently: the node would stop heartbeating and shipping CDRs while it
                # goes on serving, and the others would mark it gone. Logged, the connection
                # dropped (its state is unknown), and the next pass starts afresh.
                self.health.failed_passes += 1
                log.error("cluster_pass_failed", error=f"{type(exc).__name__}: {exc}"[:200],
                          exc_info=exc)
                self._lost(exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), PASS_S)

    def _lost(self, exc: BaseException) -> None:
        if self.health.connected or self.health.error != str(exc):
            log.error("cluster_database_unreachable", error=str(exc) or type(exc).__name__,
                      note="routing from the bindings held; CDRs queue in SQLite")
        self.health.connected = False
        self.health.error = str(exc) or type(exc).__name__
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()

    async def _connect(self) -> None:
        conn = await asyncpg.connect(self.cluster.database, timeout=CONNECT_TIMEOUT_S,
                                     command_timeout=QUERY_TIMEOUT_S)
        try:
            applied = await migrate(conn)
            if applied:
                log.info("cluster_schema_migrated", versions=applied)
            self._connected_at = await conn.fetchval("SELECT now()")
            for channel, callback in ((CONFIG_CHANNEL, self._on_config),
                                      (BINDING_CHANNEL, self._on_binding),
                                      (PIN_CHANNEL, self._on_pin)):
                await conn.add_listener(channel, callback)
            await self._flush_bindings(conn)
            await self._resync_bindings(conn)
            await self._catch_up_pins(conn)
        except BaseException:
            conn.terminate()
            raise
        self._conn = conn
        self._mirrored = None
        self._config_due = True
        self._next_heartbeat = 0.0
        self.health.connected, self.health.error = True, ""
        log.info("cluster_connected", node=self.node.name, address=self.cluster.address)

    # -- heartbeats and the nodes table ---------------------------------------------------
    async def _heartbeat(self, conn: asyncpg.Connection) -> None:
        old = await conn.fetchval(
            _HEARTBEAT, self.node.name, self.cluster.address, self.node.location, __version__,
            self.hooks.load(), self.cluster.heartbeat_seconds, self.started,
            self.health.generation, self.hooks.link_port())
        if old == "gone":
            # Taken for dead (a pause, a partition): its open calls were closed "node lost"
            # by another node; mirror them again, their real end replaces that.
            log.warning("cluster_rejoined", node=self.node.name)
            self._mirrored = None
        async with conn.transaction():
            gone = [r["name"] for r in await conn.fetch(_MARK_GONE, self.node.name,
                                                        self._connected_at)]
            if gone:
                await conn.execute(_CLOSE_LOST, gone)
                closed = await conn.fetch("DELETE FROM cdr_open WHERE node = ANY($1::text[]) "
                                          "RETURNING node", gone)
        if gone:
            self.health.lost_nodes.extend(gone)
            log.warning("cluster_node_lost", nodes=gone, calls_closed=len(closed),
                        missed_heartbeats=MISSED_HEARTBEATS)
        self.view.replace([node_row(r) for r in await conn.fetch(NODES_QUERY)])
        if int(time.time()) % 600 < self.cluster.heartbeat_seconds:
            await conn.execute("DELETE FROM pin_failures WHERE at < $1", time.time() - 86400)

    # -- outboxes -------------------------------------------------------------------------
    async def _drain(self, conn: asyncpg.Connection) -> None:
        await self._flush_bindings(conn)
        await self._flush_pins(conn)
        await self._ship_cdrs(conn)
        await self._mirror_open(conn)

    async def _flush_bindings(self, conn: asyncpg.Connection) -> None:
        ops = self.bindings.outbox
        if not ops:
            return
        me = self.node.name
        async with conn.transaction():
            for op in ops:
                if op.kind == "save":
                    b = op.binding
                    assert b is not None
                    await conn.execute(_SAVE_BINDING, b.aor, b.contact, me, b.expires_at,
                                       b.transport, b.host, b.port, b.call_id, b.cseq)
                    payload = {"op": "save", **_binding_json(b), "node": me}
                elif op.contact is None:
                    await conn.execute("DELETE FROM bindings WHERE aor = $1 AND node = $2",
                                       op.aor, me)
                    payload = {"op": "remove", "aor": op.aor, "contact": None, "node": me}
                else:
                    await conn.execute("DELETE FROM bindings WHERE aor = $1 AND contact = $2 "
                                       "AND node = $3", op.aor, op.contact, me)
                    payload = {"op": "remove", "aor": op.aor, "contact": op.contact, "node": me}
                await conn.execute("SELECT pg_notify($1, $2)", BINDING_CHANNEL,
                                   json.dumps(payload))
        del ops[:len(ops)]

    async def _resync_bindings(self, conn: asyncpg.Connection) -> None:
        """After a (re)connection: this node's live bindings written (the newer of two
        registrations of a contact wins), the others' read whole."""
        me, now = self.node.name, time.time()
        own = self.bindings.own(now)
        if own:
            await conn.executemany(_SAVE_BINDING, [
                (b.aor, b.contact, me, b.expires_at, b.transport, b.host, b.port, b.call_id,
                 b.cseq) for b in own])
        rows = await conn.fetch("SELECT aor, contact, expires_at, transport, host, port, "
                                "call_id, cseq, node FROM bindings WHERE node <> $1 AND "
                                "expires_at > $2", me, now)
        self.bindings.reload([Binding(*row) for row in rows])
        await conn.execute("DELETE FROM bindings WHERE expires_at < $1", now - 60)

    async def _flush_pins(self, conn: asyncpg.Connection) -> None:
        if not self.pins_out:
            return
        async with conn.transaction():
            for source, at in self.pins_out:
                row = await conn.fetchval("INSERT INTO pin_failures (source, at, node) VALUES "
                                          "($1, $2, $3) RETURNING id", source, at,
                                          self.node.name)
                await conn.execute("SELECT pg_notify($1, $2)", PIN_CHANNEL, json.dumps(
                    {"id": row, "source": source, "at": at, "node": self.node.name}))
        self.pins_out.clear()

    async def _catch_up_pins(self, conn: asyncpg.Connection) -> None:
        """Wrong PINs the other nodes counted while this one was not listening."""
        window = self.hooks.pin_policy().window
        rows = await conn.fetch("SELECT id, source, at FROM pin_failures WHERE id > $1 AND "
                                "node <> $2 AND at > $3 ORDER BY id", self._pin_seen,
                                self.node.name, time.time() - window)
        for row in rows:
            self._count_pin(row["id"], row["source"], row["at"])

    def _count_pin(self, ident: int, source: str, at: float) -> None:
        self._pin_seen = max(self._pin_seen, ident)
        now = self.hooks.loop_time() - max(0.0, time.time() - at)
        self.guard.counted(source, now, self.hooks.pin_policy())

    async def _ship_cdrs(self, conn: asyncpg.Connection) -> None:
        queue = self.queue
        if queue is None:
            return
        batch = queue.pending()
        while batch:
            async with conn.transaction():
                await conn.executemany(INSERT_CDR, [(self.node.name, *values)
                                                    for _, values in batch])
            queue.shipped(batch[-1][0])  # after PostgreSQL's commit: at worst sent twice
            self.health.cdrs_shipped += len(batch)
            batch = queue.pending()

    async def _mirror_open(self, conn: asyncpg.Connection) -> None:
        """The calls in progress here, so that another node can close them if this one dies."""
        if self.queue is None:
            return
        now = dict(self.queue.open_calls())
        before = self._mirrored
        if before == now:
            return
        changed = [(k, r) for k, r in now.items() if before is None or before.get(k) != r]
        async with conn.transaction():
            await conn.execute("DELETE FROM cdr_open WHERE node = $1 AND NOT key = ANY($2)",
                               self.node.name, list(now))
            await conn.executemany(
                "INSERT INTO cdr_open (node, key, record) VALUES ($1, $2, $3::jsonb) "
                "ON CONFLICT (node, key) DO UPDATE SET record = EXCLUDED.record",
                [(self.node.name, k, r) for k, r in changed])
        self._mirrored = now

    # -- config generations ---------------------------------------------------------------
    async def _load_config(self, conn: asyncpg.Connection) -> None:
        self._config_due = False
        row = await conn.fetchrow("SELECT generation, text, source FROM config_generations "
                                  "ORDER BY generation DESC LIMIT 1")
        if row is None:
            return
        generation = Generation(int(row["generation"]), row["text"], row["source"])
        if generation.number in (self.health.generation, self.health.refused_generation):
            return
        problems = self._apply(generation)
        if problems:
            self.health.refused_generation = generation.number
            log.error("cluster_config_refused", generation=generation.number,
                      problems=problems, kept=self.health.generation)
            return
        self.health.generation = generation.number
        try:
            save(self.generation_path, generation)
        except OSError as exc:
            log.warning("cluster_config_not_saved", path=str(self.generation_path),
                        error=str(exc), note="a restart while the database is away "
                        "runs on the generation saved before, or the local file alone")
        await conn.execute("UPDATE nodes SET config_generation = $1 WHERE name = $2",
                           generation.number, self.node.name)
        log.info("cluster_config_loaded", generation=generation.number)

    def _apply(self, generation: Generation) -> list[str]:
        """The node's config over `generation`: [] when in force, else its problems."""
        source = f"cluster generation {generation.number} ({generation.source})"
        try:
            return self.hooks.apply_config(generation.number,
                                           shared_part(generation.text, source))
        except ConfigError as exc:
            return exc.problems

    # -- NOTIFY ---------------------------------------------------------------------------
    def _on_config(self, conn: object, pid: int, channel: str, payload: object) -> None:
        self._config_due = True
        self._wake.set()

    def _on_binding(self, conn: object, pid: int, channel: str, payload: object) -> None:
        event = json.loads(str(payload))
        if event["node"] == self.node.name:
            return
        if event["op"] == "save":
            self.bindings.learned(Binding(
                event["aor"], event["contact"], event["expires_at"], event["transport"],
                event["host"], event["port"], event["call_id"], event["cseq"], event["node"]))
        else:
            self.bindings.unlearned(event["aor"], event["contact"], event["node"])

    def _on_pin(self, conn: object, pid: int, channel: str, payload: object) -> None:
        event = json.loads(str(payload))
        if event["node"] != self.node.name:
            self._count_pin(int(event["id"]), event["source"], float(event["at"]))

    def status(self) -> dict[str, object]:
        now = time.time()
        return {"connected": self.health.connected, "error": self.health.error,
                "config_generation": self.health.generation,
                "cdr_backlog": self.queue.backlog() if self.queue is not None else 0,
                "nodes": [row.to_json(now) for row in self.view.nodes.values()]}


def node_row(row: asyncpg.Record) -> NodeRow:
    return NodeRow(row["name"], row["address"], row["location"], row["version"], row["load"],
                   row["heartbeat_seconds"], float(row["heartbeat"]), float(row["started"]),
                   row["state"], int(row["config_generation"]), int(row["port"]))


def _binding_json(b: Binding) -> dict[str, object]:
    return {"aor": b.aor, "contact": b.contact, "expires_at": b.expires_at,
            "transport": b.transport, "host": b.host, "port": b.port, "call_id": b.call_id,
            "cseq": b.cseq}
