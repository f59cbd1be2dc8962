"""A node's membership against a real PostgreSQL, in process: the schema made once by
whichever node comes first, heartbeats in the nodes table, bindings registered at one node
seen with their holder at another, wrong PINs counted everywhere, CDRs shipped once each
through an outage of PostgreSQL, a silent node marked gone with its calls closed, and the
config generation in force kept across a restart while PostgreSQL is away."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg

from gateway.calls.cdr import CallRecord
from gateway.calls.registrar import Binding
from gateway.cluster.generations import Generation, saved
from gateway.cluster.migrations import MIGRATIONS, migrate
from gateway.cluster.push import store
from gateway.config.load import load_file, parse_text
from gateway.daemon.node import Node
from tests.kit.postgres import Postgres


def node(tmp: Path, name: str, database: str, location: str = "") -> Node:
    place = f'location = "{location}"\n' if location else ""
    text = (f'[node]\nname = "{name}"\naddress = "127.0.0.1"\nstate_dir = "{tmp / name}"\n'
            f'{place}[listen]\nudp = 0\ntcp = 0\ntls = 0\n'
            f'[cluster]\ndatabase = "{database}"\nheartbeat_seconds = 1\nmax_calls = 3\n')
    if location:
        text += f'[[locations]]\nname = "{location}"\n'
    return Node(parse_text(text, f"{name}.toml", base_dir=None))


async def until(check: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the time given"
        await asyncio.sleep(0.02)


async def rows(database: str, query: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database)
    try:
        return list(await conn.fetch(query))
    finally:
        await conn.close()


async def test_the_schema_is_migrated_once(database: str) -> None:
    conn = await asyncpg.connect(database)
    try:
        assert await migrate(conn) == [m.version for m in MIGRATIONS]
        assert await migrate(conn) == []
    finally:
        await conn.close()


async def test_nodes_heartbeat_share_bindings_pins_and_load(tmp_path: Path,
                                                            database: str) -> None:
    one, two = node(tmp_path, "one", database, "London"), node(tmp_path, "two", database,
                                                                "London")
    await one.start()
    await two.start()
    try:
        await until(lambda: len(one.view.nodes) == 2 and len(two.view.nodes) == 2)
        assert one.cluster is not None and one.cluster.status()["connected"] is True
        table = await rows(database, "SELECT name, state, address FROM nodes ORDER BY name")
        assert [tuple(r) for r in table] == [("one", "up", "127.0.0.1"),
                                             ("two", "up", "127.0.0.1")]

        one.registrar.store.save(Binding("room1@example.com", "sip:room1@192.0.2.5:5060",
                                         time.time() + 600, "UDP", "192.0.2.5", 5060, "c1", 1))
        one.cluster.nudge()
        await until(lambda: two.registrar.bindings("room1@example.com"))
        [seen] = two.registrar.bindings("room1@example.com")
        assert (seen.node, seen.contact) == ("one", "sip:room1@192.0.2.5:5060")

        policy = one.calls.settings.pins
        for _ in range(policy.attempts - 1):
            one.calls.ctx.pin_guard.failed("198.51.100.9", one._loop.time(), policy)
        await until(lambda: len(two.calls.ctx.pin_guard.failures.get("198.51.100.9", ())) ==
                    policy.attempts - 1)
        assert two.calls.ctx.pin_guard.locked_for("198.51.100.9", two._loop.time()) is None
        assert two.calls.ctx.pin_guard.failed("198.51.100.9", two._loop.time(), policy)

        admission = two.calls.admission
        assert admission.overloaded(0.0, 0) is None
        for key in range(3):
            one.calls.ctx.calls[10_000 + key] = None  # type: ignore[assignment]
        await until(lambda: two.view.elsewhere("London") == 3, timeout=4)
        refused = admission.overloaded(0.0, 0)
        assert refused is not None and refused.startswith("cluster call limit reached: 3")
        one.calls.ctx.calls.clear()
    finally:
        await two.close()
        await one.close()


async def test_cdrs_wait_for_postgresql_and_arrive_once(tmp_path: Path, postgres: Postgres
                                                        ) -> None:
    database = postgres.database()
    one = node(tmp_path, "one", database)
    await one.start()
    assert one.cdrs is not None and one.cluster is not None
    try:
        def call(n: int) -> None:
            assert one.cdrs is not None
            start = time.time()
            record = CallRecord(f"call-{n}", "sip:a@x", "b@y", "rule", start)
            one.cdrs.open(record)
            record.ended, record.end_cause = start + 1, "200 ok"
            one.cdrs.write(record)

        for n in range(20):
            call(n)
        await until(lambda: one.cluster is not None and one.cluster.health.cdrs_shipped == 20)
        postgres.stop()
        for n in range(20, 60):
            call(n)
        one.cdrs.flush()
        await until(lambda: one.cluster is not None and not one.cluster.health.connected)
        assert one.cluster.queue is not None and one.cluster.queue.backlog() == 40
        postgres.start()
        await until(lambda: one.cluster is not None and one.cluster.health.cdrs_shipped == 60,
                    timeout=10)
        shipped = await rows(database, "SELECT in_call_id FROM cdr ORDER BY started")
        assert [r["in_call_id"] for r in shipped] == [f"call-{n}" for n in range(60)]
    finally:
        await one.close()


async def test_a_silent_node_is_marked_gone_and_its_calls_closed(tmp_path: Path,
                                                                 database: str) -> None:
    one, two = node(tmp_path, "one", database), node(tmp_path, "two", database)
    await one.start()
    await two.start()
    try:
        assert two.cdrs is not None and two.cluster is not None
        record = CallRecord("lost-call", "sip:a@x", "b@y", "rule", time.time())
        two.cdrs.open(record)
        two.cdrs.flush()
        await until(lambda: one.view.alive("two") and two.cluster is not None
                    and two.cluster._mirrored)
        two.cluster._task.cancel()  # type: ignore[union-attr]  # silent, as if killed
        await until(lambda: not one.view.alive("two"), timeout=8)
        [closed] = await rows(database, "SELECT node, in_call_id, end_cause FROM cdr")
        assert tuple(closed) == ("two", "lost-call", "node lost")
        assert await rows(database, "SELECT * FROM cdr_open") == []
    finally:
        await two.close()
        await one.close()


SHARED = """
[[services]]
type = "test_call"
name = "Pushed test call {n}"
aliases = ["pushed-test-call"]
"""


async def test_a_node_restarting_while_postgresql_is_away_runs_on_the_last_generation(
        tmp_path: Path, postgres: Postgres) -> None:
    """The generation in force is saved in the node's state directory: restarted with
    PostgreSQL stopped, the node runs on it (not on its local file alone), and takes the
    next one once the database is back."""
    database = postgres.database()
    local = tmp_path / "one.toml"
    local.write_text(f'[node]\nname = "one"\naddress = "127.0.0.1"\n'
                     f'state_dir = "{tmp_path / "state"}"\n[listen]\nudp = 0\ntcp = 0\ntls = 0\n'
                     f'[cluster]\ndatabase = "{database}"\nheartbeat_seconds = 1\n')

    def services(one: Node) -> list[str]:
        return [service.name for service in one.config.services]

    one = Node(load_file(str(local)), config_path=str(local))
    await one.start()
    try:
        await store(database, SHARED.format(n=1), "shared.toml")
        await until(lambda: one.cluster is not None and one.cluster.health.generation == 1)
        assert services(one) == ["Pushed test call 1"]
    finally:
        await one.close()

    postgres.stop()
    one = Node(load_file(str(local)), config_path=str(local))
    assert services(one) == []
    await one.start()
    try:
        assert one.cluster is not None
        assert services(one) == ["Pushed test call 1"]
        assert one.cluster.health.generation == 1
        await until(lambda: one.cluster is not None and one.cluster.health.error != "")
        assert not one.cluster.health.connected
        postgres.start()
        await until(lambda: one.cluster is not None and one.cluster.health.connected,
                    timeout=10)
        await store(database, SHARED.format(n=2), "shared.toml")
        await until(lambda: one.cluster is not None and one.cluster.health.generation == 2)
        assert services(one) == ["Pushed test call 2"]
        assert saved(tmp_path / "state" / "cluster_generation.json") == Generation(
            2, SHARED.format(n=2), "shared.toml")
    finally:
        await one.close()


async def test_a_pass_that_fails_unexpectedly_is_logged_and_the_loop_goes_on(
        tmp_path: Path, database: str) -> None:
    """An error no pass expected (here a heartbeat that raises) must not end the cluster
    task: the node would go silent to the others while it serves. It is counted, the
    connection dropped, and the next passes connect and heartbeat again."""
    one = node(tmp_path, "one", database)
    await one.start()
    member = one.cluster
    assert member is not None
    try:
        await until(lambda: member.health.connected)
        real = member._heartbeat
        failures = [RuntimeError("boom")]

        async def heartbeat(conn: asyncpg.Connection) -> None:
            if failures:
                raise failures.pop()
            await real(conn)

        member._heartbeat = heartbeat  # type: ignore[method-assign]
        member._next_heartbeat = 0.0
        member.nudge()
        await until(lambda: member.health.failed_passes == 1)
        await until(lambda: member.health.connected, timeout=5)
        before = await rows(database, "SELECT heartbeat FROM nodes WHERE name = 'one'")
        member._next_heartbeat = 0.0
        member.nudge()
        await asyncio.sleep(0.5)
        after = await rows(database, "SELECT heartbeat FROM nodes WHERE name = 'one'")
        assert after[0]["heartbeat"] > before[0]["heartbeat"]
    finally:
        await one.close()
