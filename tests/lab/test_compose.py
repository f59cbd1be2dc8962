"""The Docker compose lab is valid as written: `docker-compose config` accepts it (there is
no Docker engine here to bring it up; test_lync_call.py runs the same topology as local
processes), it has every part of the lab, and lyncgate accepts the lab's config."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from gateway.config.load import load_file
from routing.engine import CallContext, Router
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
    assert set(services) == {"certs", "dns", "lyncgate", "lyncgate2", "postgres",
                             "sip-endpoint", "kamailio", "coturn", "lync-sim"}


def test_the_lab_config_is_valid_and_routes_lync_calls_through_kamailio() -> None:
    config = load_file(DOCKER / "lab" / "lyncgate.toml", check_files=False)
    [rule] = config.routing_rules
    assert rule.call_via == "kamailio" and rule.protocols == frozenset({"mssip"})
    assert config.tls.verify_mode == "on"


def test_the_lab_nodes_are_one_cluster() -> None:
    """Both lab nodes name the compose file's PostgreSQL, each with its own name and address."""
    one, two = (load_file(DOCKER / "lab" / name, check_files=False)
                for name in ("lyncgate.toml", "lyncgate2.toml"))
    assert one.cluster is not None and two.cluster is not None
    assert one.cluster.database == two.cluster.database
    assert "@172.28.0.5:5432/" in one.cluster.database
    assert (one.node.name, one.node.address) != (two.node.name, two.node.address)


def test_the_call_the_lync_simulator_places_is_routed_by_the_lab_config() -> None:
    """The alias lync-sim dials (its SIPp `-s` user at the scenario's domain) must match the
    lab's rule, or `docker compose up` shows a call rejected with 404."""
    sim = (DOCKER / "lab" / "lync-sim.sh").read_text()
    user = re.search(r"-s (\S+)", sim)
    scenario = (Path(__file__).resolve().parents[1] / "scenarios" /
                "lync_multipart_uac.xml").read_text()
    domain = re.search(r"INVITE sip:\[service\]@(\S+) SIP/2.0", scenario)
    assert user and domain
    config = load_file(DOCKER / "lab" / "lyncgate.toml", check_files=False)
    router = Router(config.services, config.routing_rules)
    decision = router.decide(f"sip:{user[1]}@{domain[1]}", CallContext(protocol="mssip"))
    assert decision.routed and decision.rule is not None, decision.reason
    assert decision.rule.call_via == "kamailio"
