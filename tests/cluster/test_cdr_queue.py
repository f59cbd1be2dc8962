"""The node's SQLite CDRs as the queue toward PostgreSQL: what is pending is read past the
shipped mark in the order calls ended, in batches, the mark survives a reopening, the calls
in progress are read as committed; and the shipping statement against a real PostgreSQL
writes a batch sent twice once, lets a node's own record replace a 'node lost' close, and
leaves every other CDR as first written. Against two daemons under SIPp load, PostgreSQL
stopped and restarted mid-load: every call's CDR is in PostgreSQL exactly once."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from pathlib import Path

import asyncpg
import pytest

from gateway.calls.cdr import CallRecord, CdrStore
from gateway.cluster.cdr_queue import COLUMNS, INSERT, LOST_CAUSE, CdrQueue
from gateway.cluster.migrations import migrate
from tests.kit.cluster import cluster_nodes
from tests.kit.postgres import Postgres
from tests.peers import SCENARIOS, free_port, need, sipp

CALLS_PER_NODE = 150


def finished(store: CdrStore, call_id: str, cause: str = "200 ok") -> None:
    record = CallRecord(call_id, "sip:a@x", "b@y", "rule", 1000.0)
    record.ended, record.end_cause = 1001.0, cause
    store.write(record)


def test_pending_is_read_in_order_past_the_mark_and_the_mark_survives(tmp_path: Path) -> None:
    path = tmp_path / "cdr.sqlite3"
    store = CdrStore(path)
    for n in range(5):
        finished(store, f"call-{n}")
    assert store.flush()
    queue = CdrQueue(path)
    batch = queue.pending(limit=3)
    assert [values[0] for _, values in batch] == ["call-0", "call-1", "call-2"]
    assert [ident for ident, _ in batch] == sorted(ident for ident, _ in batch)
    assert len(batch[0][1]) == len(COLUMNS)
    assert queue.backlog() == 5
    queue.shipped(batch[-1][0])
    assert queue.backlog() == 2
    queue.close()

    queue = CdrQueue(path)  # a restart: the mark was kept in the file
    assert [values[0] for _, values in queue.pending()] == ["call-3", "call-4"]
    queue.shipped(queue.pending()[-1][0])
    assert queue.pending() == [] and queue.backlog() == 0
    finished(store, "call-5")
    assert store.flush()
    assert [values[0] for _, values in queue.pending()] == ["call-5"]
    queue.close()
    store.close()


def test_open_calls_are_those_in_progress_as_committed(tmp_path: Path) -> None:
    path = tmp_path / "cdr.sqlite3"
    store = CdrStore(path)
    queue = CdrQueue(path)
    going = CallRecord("going", "sip:a@x", "b@y", "rule", time.time())
    done = CallRecord("done", "sip:a@x", "b@y", "rule", time.time())
    store.open(going)
    store.open(done)
    done.ended, done.end_cause = time.time(), "200 ok"
    store.write(done)
    assert store.flush()
    [(key, record)] = queue.open_calls()
    assert key == going.key and '"in_call_id": "going"' in record
    queue.close()
    store.close()


async def test_a_batch_shipped_twice_is_written_once_and_node_lost_is_replaced(
        tmp_path: Path, database: str) -> None:
    path = tmp_path / "cdr.sqlite3"
    store = CdrStore(path)
    finished(store, "kept")
    finished(store, "lost", cause="487 cancelled")
    assert store.flush()
    queue = CdrQueue(path)
    rows = [("one", *values) for _, values in queue.pending()]
    conn = await asyncpg.connect(database)
    try:
        await migrate(conn)
        await conn.execute("INSERT INTO cdr (node, in_call_id, started, caller, alias, "
                           "outcome, ended, end_cause, ended_by) VALUES ('one', 'lost', "
                           "1000, 'sip:a@x', 'b@y', 'rule', 1500, $1, 'gateway')", LOST_CAUSE)
        await conn.execute("INSERT INTO cdr (node, in_call_id, started, caller, alias, "
                           "outcome, ended, end_cause, ended_by) VALUES ('one', 'kept', "
                           "1000, 'sip:a@x', 'b@y', 'rule', 1001, 'first', 'gateway')")
        for _ in range(2):
            await conn.executemany(INSERT, rows)
        table = await conn.fetch("SELECT in_call_id, ended, end_cause FROM cdr "
                                 "ORDER BY in_call_id")
        assert [tuple(r) for r in table] == [("kept", 1001.0, "first"),
                                             ("lost", 1001.0, "487 cancelled")]
    finally:
        await conn.close()
        queue.close()
        store.close()


@pytest.mark.peer
def test_every_cdr_reaches_postgresql_once_through_an_outage_under_load(
        tmp_path: Path, postgres: Postgres) -> None:
    database = postgres.database()
    uas_port = free_port()
    rule = ("[[routing_rules]]\nname = \"endpoints\"\npriority = 10\nprotocols = [\"sip\"]\n"
            "match = 'call-(\\d+)'\n"
            f"replace = 'uas-\\1@127.0.0.1:{uas_port};transport=udp'\n")
    with cluster_nodes(tmp_path, database, 2, extra=rule) as nodes:
        for daemon in nodes:
            daemon.wait_event("cluster_connected")
        uas = subprocess.Popen(
            [need("sipp"), "-sf", str(SCENARIOS / "uas_rr.xml"), "-i", "127.0.0.1", "-p",
             str(uas_port), "-m", str(2 * CALLS_PER_NODE), "-nostdin", "-timeout", "60s"],
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        results: dict[str, subprocess.CompletedProcess[str]] = {}

        def load(daemon_index: int) -> None:
            daemon = nodes[daemon_index]
            results[daemon.host] = sipp(
                f"{daemon.host}:{daemon.udp}", "uac_rr.xml", "-s", "call-7", "-m",
                str(CALLS_PER_NODE), "-r", "30", "-p", str(free_port()), "-recv_timeout",
                "10000", timeout=40, workdir=str(daemon.tmp))

        workers = [threading.Thread(target=load, args=(n,)) for n in range(2)]
        try:
            for worker in workers:
                worker.start()
            for daemon in nodes:
                daemon.wait_event("call_connected", count=30)
            postgres.stop()
            for daemon in nodes:
                daemon.wait_event("cluster_database_unreachable")
                daemon.wait_event("call_connected", count=90)  # calls go on without it
            postgres.start()
            for worker in workers:
                worker.join(60)
        finally:
            uas.kill()
            uas.wait()
        for host, done in results.items():
            assert done.returncode == 0, f"{host}: {done.stdout}{done.stderr}"
        for daemon in nodes:
            daemon.wait_event("cluster_connected", count=2, timeout=15)

        async def shipped() -> list[asyncpg.Record]:
            deadline = time.monotonic() + 15
            conn = await asyncpg.connect(database)
            try:
                while True:
                    rows = await conn.fetch("SELECT node, in_call_id FROM cdr")
                    if len(rows) >= 2 * CALLS_PER_NODE or time.monotonic() > deadline:
                        return list(rows)
                    await asyncio.sleep(0.1)
            finally:
                await conn.close()

        rows = asyncio.run(shipped())
        assert len(rows) == 2 * CALLS_PER_NODE
        assert len({tuple(r) for r in rows}) == 2 * CALLS_PER_NODE
        for name in ("n1", "n2"):
            assert sum(r["node"] == name for r in rows) == CALLS_PER_NODE
