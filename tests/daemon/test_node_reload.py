"""A reload reaches every part that reads the config, in process: call control gets the new
generation's settings snapshot, the registrar the new devices and realm; calls in progress
keep the snapshot they were admitted under (tests/calls/test_call_life.py)."""

from __future__ import annotations

from pathlib import Path

from structlog.testing import capture_logs

from gateway.config.load import parse_text
from gateway.daemon.node import Node

CONFIG = """
[node]
address = "127.0.0.1"
state_dir = "@STATE@"

[global]
mssip_domain = "@DOMAIN@"
max_calls = @MAX@

[[devices]]
alias = "@DEVICE@@vc.example.com"
username = "@DEVICE@"
password = "s3cret!"
"""


def config(tmp_path: Path, device: str, domain: str, max_calls: int) -> str:
    return (CONFIG.replace("@STATE@", str(tmp_path)).replace("@DEVICE@", device)
            .replace("@DOMAIN@", domain).replace("@MAX@", str(max_calls)))


async def test_a_reload_reaches_call_control_and_the_registrar(tmp_path: Path) -> None:
    node = Node(parse_text(config(tmp_path, "room12", "vc.example.com", 5), "a.toml",
                           base_dir=None))
    try:
        before = node.calls.settings
        assert (before.generation, before.limits.max_calls) == (1, 5)
        assert node.registrar.device_for("room12@vc.example.com") is not None
        node.reload(parse_text(config(tmp_path, "room14", "lync.example.com", 9), "b.toml",
                               base_dir=None))
        after = node.calls.settings
        assert (after.generation, after.limits.max_calls) == (2, 9)
        assert after.mssip_domain("") == "lync.example.com"
        assert before.limits.max_calls == 5  # a snapshot: what calls admitted before keep
        assert node.registrar.device_for("room12@vc.example.com") is None
        assert node.registrar.device_for("room14@vc.example.com") is not None
        assert node.registrar.realm == "lync.example.com"
    finally:
        await node.close()


async def test_a_reload_names_the_fields_only_a_restart_applies(tmp_path: Path) -> None:
    node = Node(parse_text(config(tmp_path, "room12", "vc.example.com", 5), "a.toml",
                           base_dir=None))
    try:
        moved = config(tmp_path, "room12", "vc.example.com", 5).replace(
            'address = "127.0.0.1"', 'address = "127.0.0.1"\nstatic_nat_address = "203.0.113.9"'
        ) + "[listen]\nudp = 5999\n"
        with capture_logs() as logs:
            node.reload(parse_text(moved, "b.toml", base_dir=None))
        [warning] = [e for e in logs if e["event"] == "reload_listeners_unchanged"]
        assert warning["fields"] == ["node.static_nat_address", "listen.udp"]
        assert node.local.static_nat == ""  # the running node keeps what it started with
    finally:
        await node.close()
