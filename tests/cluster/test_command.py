"""`lyncgate cluster status` over three running daemons, one of them killed with SIGKILL
during a call: the others mark it gone within three heartbeats, its call in progress gets a
CDR closed "node lost" in PostgreSQL, and the status says so (exit 1)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from tests.daemon.harness import open_cdrs
from tests.kit.cluster import cluster_nodes, lyncgate
from tests.kit.postgres import Postgres
from tests.peers import need

SHARED = '[[services]]\ntype = "test_call"\nname = "Test call"\naliases = ["test-call"]\n' \
         'duration_seconds = 60\n'


def test_a_node_killed_during_a_call_is_marked_gone_and_its_call_closed(
        tmp_path: Path, postgres: Postgres) -> None:
    database = postgres.database()
    dbname = database.rsplit("/", 1)[1]
    with cluster_nodes(tmp_path, database) as nodes:
        shared = tmp_path / "shared.toml"
        shared.write_text(SHARED)
        assert lyncgate("config", "push", str(shared), "--config",
                        str(nodes[0].config)).returncode == 0
        victim = nodes[2]
        victim.wait_event("cluster_config_loaded")
        caller = subprocess.Popen(
            [need("sipp"), f"127.0.0.4:{victim.udp}", "-sn", "uac", "-s", "test-call",
             "-m", "1", "-d", "30000", "-i", "127.0.0.1", "-nostdin", "-timeout", "40s"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
        try:
            open_cdrs(victim.tmp, lambda records: any(r["answered"] for r in records))
            deadline = time.monotonic() + 5
            while postgres.psql("SELECT count(*) FROM cdr_open WHERE node = 'n3'",
                                dbname) != "1":
                assert time.monotonic() < deadline, "the open call never reached PostgreSQL"
                time.sleep(0.05)
            victim.proc.kill()
            killed = time.monotonic()
            query = "SELECT node || ' ' || end_cause FROM cdr"
            while postgres.psql(query, dbname) != "n3 node lost":
                assert time.monotonic() - killed < 8, "the killed node's call was not closed"
                time.sleep(0.1)
            # Three heartbeats of 1 s missed, then the next heartbeat of a survivor.
            assert time.monotonic() - killed < 3 * 1 + 2
            [marker] = [e for n in nodes[:2] for e in n.events("cluster_node_lost")]
            assert (marker["nodes"], marker["calls_closed"]) == (["n3"], 1)
            status = lyncgate("cluster", "status", "--config", str(nodes[0].config), "--json")
            assert status.returncode == 1
            states = {n["name"]: n["state"] for n in json.loads(status.stdout)["nodes"]}
            assert states == {"n1": "up", "n2": "up", "n3": "gone"}
        finally:
            caller.kill()
            caller.wait()
