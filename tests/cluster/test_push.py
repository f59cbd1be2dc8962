"""`lyncgate config push` against three running daemons: a valid shared config becomes a
generation that every node loads over its own local file at once (LISTEN/NOTIFY); a bad one
is refused with its field paths, nothing is stored, and every node keeps the one in force."""

from __future__ import annotations

import json
from pathlib import Path

from tests.kit.cluster import cluster_nodes, lyncgate

SHARED = """
[global]
mssip_domain = "vc.example.com"

[[services]]
type = "test_call"
name = "Pushed test call"
aliases = ["pushed-test-call"]
"""
PER_NODE = '[node]\nname = "sneaky"\n'
BAD_RULE = """
[[routing_rules]]
name = "broken"
priority = 10
match = '(unbalanced'
"""


def test_a_push_reaches_every_node_and_a_bad_one_reaches_none(tmp_path: Path,
                                                              database: str) -> None:
    with cluster_nodes(tmp_path, database) as nodes:
        for daemon in nodes:
            daemon.wait_event("cluster_connected")
        good = tmp_path / "shared.toml"
        good.write_text(SHARED)
        pushed = lyncgate("config", "push", str(good), "--config", str(nodes[0].config))
        assert pushed.returncode == 0, pushed.stderr
        assert "stored as cluster config generation 1" in pushed.stdout
        for daemon in nodes:
            [loaded] = daemon.wait_event("cluster_config_loaded", timeout=2)
            assert loaded["generation"] == 1
            [reloaded] = daemon.events("config_reloaded")
            assert "cluster generation 1" in reloaded["config"]

        bad = tmp_path / "bad.toml"
        bad.write_text(PER_NODE + BAD_RULE)
        refused = lyncgate("config", "push", str(bad), "--config", str(nodes[1].config))
        assert refused.returncode == 2
        assert f"{bad}: node: is set per node" in refused.stderr
        assert refused.stdout == ""
        bad.write_text(BAD_RULE)
        refused = lyncgate("config", "push", str(bad), "--config", str(nodes[1].config))
        assert refused.returncode == 2
        assert f"{bad}: routing_rules[0].match: invalid regex" in refused.stderr

        status = lyncgate("cluster", "status", "--config", str(nodes[2].config), "--json")
        assert status.returncode == 0, status.stderr
        table = json.loads(status.stdout)
        assert table["config_generation"] == 1
        assert [(n["name"], n["state"], n["config_generation"]) for n in table["nodes"]] == [
            ("n1", "up", 1), ("n2", "up", 1), ("n3", "up", 1)]
        for daemon in nodes:
            assert len(daemon.events("cluster_config_loaded")) == 1
