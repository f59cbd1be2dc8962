"""The Docker compose lab is valid as written: `docker-compose config` accepts it (there is
no Docker engine here to bring it up; test_lync_call.py runs the same topology as local
processes), it has every part of the lab, and lyncgate accepts the lab's config."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gateway.config.load import load_file
from tests.peers import need

pytestmark = pytest.mark.peer
DOCKER = Path(__file__).resolve().parents[2] / "docker"


def compose(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([need("docker-compose"), "-f", str(DOCKER / "compose.yaml"), *args],
                          capture_output=True, text=True, timeout=60, check=False)


def test_compose_file_validates_and_has_the_whole_lab() -> None:
    checked = compose("config", "-q")
    assert checked.returncode == 0, checked.stderr
    services = compose("config", "--services").stdout.split()
    assert set(services) == {"certs", "dns", "lyncgate", "sip-endpoint", "kamailio", "coturn",
                             "lync-sim"}


def test_the_lab_config_is_valid_and_routes_lync_calls_through_kamailio() -> None:
    config = load_file(DOCKER / "lab" / "lyncgate.toml")
    [rule] = config.routing_rules
    assert rule.call_via == "kamailio" and rule.protocols == frozenset({"mssip"})
    assert config.tls.verify_mode == "on"
