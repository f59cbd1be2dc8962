"""`[cluster]`: absent (the embedded default, any single node) means no cluster; present, its
database URL, address, heartbeat and cluster-wide call limit are read and checked with their
field paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from gateway.config.errors import ConfigError
from gateway.config.load import load_default, parse_text

NODE = '[node]\naddress = "127.0.0.2"\n'


def test_the_embedded_default_is_one_node_without_a_cluster() -> None:
    assert load_default().cluster is None
    assert parse_text(NODE, "a.toml", base_dir=None).cluster is None


def test_a_cluster_section_is_read_with_the_node_address_as_default(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "cluster-ca.pem"))
    config = parse_text(NODE + '[cluster]\ndatabase = "postgresql://gw@db:5432/lyncgate"\n'
                        'trusted_ca = "cluster-ca.pem"\nheartbeat_seconds = 1\nmax_calls = 40\n',
                        "a.toml", base_dir=tmp_path)
    cluster = config.cluster
    assert cluster is not None
    assert cluster.database == "postgresql://gw@db:5432/lyncgate"
    assert cluster.address == "127.0.0.2"
    assert cluster.trusted_ca == tmp_path / "cluster-ca.pem"
    assert (cluster.heartbeat_seconds, cluster.max_calls) == (1, 40)


def test_every_cluster_problem_is_named_by_its_field(tmp_path: Path) -> None:
    text = (NODE + '[cluster]\ndatabase = "mysql://db/x"\naddress = "db.example.com"\n'
            'trusted_ca = "missing.pem"\nheartbeat_seconds = 0\nmax_calls = -1\nport = 0\n')
    with pytest.raises(ConfigError) as caught:
        parse_text(text, "a.toml", base_dir=tmp_path)
    fields = sorted(p.split(":", 1)[0] for p in caught.value.problems)
    assert fields == ["cluster.address", "cluster.database", "cluster.heartbeat_seconds",
                      "cluster.max_calls", "cluster.port", "cluster.trusted_ca"]


def test_a_cluster_needs_its_database() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_text(NODE + "[cluster]\n", "a.toml", base_dir=None)
    assert caught.value.problems == ["cluster.database: is required"]
