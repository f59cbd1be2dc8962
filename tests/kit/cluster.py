"""Daemon nodes of one cluster on 127.0.0.2-4 (tests/daemon/harness.py), each in its own
directory, sharing a test's PostgreSQL database; and the CLI run against them."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.daemon.harness import ROOT, Daemon


def node_text(name: str, host: str, database: str) -> str:
    """A node's local file: only what is its own (the shared rest is pushed)."""
    return (f'[node]\nname = "{name}"\nsip_tls_fqdn = "{name}.example.com"\n'
            f'address = "{host}"\nstate_dir = "@STATE@"\n\n'
            '[listen]\nudp = @UDP@\ntcp = @TCP@\ntls = 0\n\n[tls]\nverify_mode = "off"\n\n'
            '[avatar]\nport = 0\n\n'
            f'[cluster]\ndatabase = "{database}"\nheartbeat_seconds = 1\n')


@contextlib.contextmanager
def cluster_nodes(tmp: Path, database: str, count: int = 3) -> Iterator[list[Daemon]]:
    nodes: list[Daemon] = []
    try:
        for n in range(1, count + 1):
            home = tmp / f"n{n}"
            home.mkdir()
            nodes.append(Daemon(home, node_text(f"n{n}", f"127.0.0.{n + 1}", database),
                                host=f"127.0.0.{n + 1}"))
        yield nodes
    finally:
        for daemon in nodes:
            daemon.stop(grace=10)


def lyncgate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
