"""One config for the cluster, without PostgreSQL: a pushed document is refused with field
paths when it is not TOML or carries a node's own sections; a node's config is its local
file alone until a generation is pushed, then the local file's own sections over the shared
rest, problems named at once; the generation in force saved to and read back from the state
directory, a missing file being none and a damaged one refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cluster.generations import (
    PER_NODE,
    Generation,
    merged,
    read_local,
    save,
    saved,
    shared_part,
)
from gateway.config.errors import ConfigError

LOCAL = """
[node]
name = "one"
address = "127.0.0.2"

[listen]
udp = 5070

[[services]]
type = "test_call"
name = "Local only"
aliases = ["local-test-call"]
"""
SHARED = """
[[services]]
type = "test_call"
name = "Shared"
aliases = ["shared-test-call"]
"""


def test_a_pushed_document_is_refused_for_a_nodes_own_sections() -> None:
    assert shared_part(SHARED, "shared.toml")["services"][0]["name"] == "Shared"
    with pytest.raises(ConfigError) as refused:
        shared_part('[node]\nname = "x"\n[listen]\nudp = 1\n' + SHARED, "shared.toml")
    assert refused.value.source == "shared.toml"
    assert [p.split(":")[0] for p in refused.value.problems] == ["node", "listen"]
    with pytest.raises(ConfigError) as bad:
        shared_part("[[services]\n", "shared.toml")
    assert bad.value.problems[0].startswith("<toml>: ")
    assert set(PER_NODE) >= {"node", "listen", "tls", "cluster"}


def test_a_nodes_config_is_its_own_sections_over_the_shared_rest(tmp_path: Path) -> None:
    local = tmp_path / "one.toml"
    local.write_text(LOCAL)
    alone = merged(local, None, "unused")
    assert [s.name for s in alone.services] == ["Local only"]
    both = merged(local, shared_part(SHARED, "shared.toml"), "one.toml + generation 3")
    assert [s.name for s in both.services] == ["Shared"]  # the local file's services go
    assert (both.node.name, both.node.address, both.listen.udp) == ("one", "127.0.0.2", 5070)
    assert both.source == "one.toml + generation 3"
    with pytest.raises(ConfigError) as refused:
        merged(local, {"routing_rules": [{"name": "r", "priority": 1, "match": "("}]}, "g")
    assert any(p.startswith("routing_rules[0].match") for p in refused.value.problems)


def test_a_local_file_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as missing:
        read_local(tmp_path / "absent.toml")
    assert missing.value.problems[0].startswith("<file>: cannot read")
    broken = tmp_path / "broken.toml"
    broken.write_text("[node\n")
    with pytest.raises(ConfigError) as bad:
        read_local(broken)
    assert bad.value.problems[0].startswith("<toml>: ")


def test_the_generation_in_force_is_saved_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "cluster_generation.json"
    assert saved(path) is None
    save(path, Generation(4, SHARED, "shared.toml"))
    save(path, Generation(5, SHARED + "# later\n", "later.toml"))
    assert saved(path) == Generation(5, SHARED + "# later\n", "later.toml")
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no partial file left

    path.write_text("{not json")
    with pytest.raises(ConfigError) as damaged:
        saved(path)
    assert damaged.value.problems[0].startswith("<file>: cannot read")
    path.write_text(json.dumps({"generation": "5", "text": SHARED, "source": "x"}))
    with pytest.raises(ConfigError) as wrong:
        saved(path)
    assert wrong.value.problems == ["<file>: not a saved cluster config generation"]
