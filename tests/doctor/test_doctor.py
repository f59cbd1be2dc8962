"""`lyncgate doctor` against real peers on loopback: dnsmasq with good and broken records,
lyncgate itself as the Lync pool (mutual TLS), `openssl s_server` with a certificate from a CA
we do not trust and one refusing our client certificate, and coturn with good and wrong
credentials."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from gateway.cli import main
from tests.daemon.harness import Daemon
from tests.kit.nodes import loopback_node
from tests.peers import coturn, dnsmasq, free_port, need, process

pytestmark = pytest.mark.peer

NODE = "gw.example.test"


def certificate(tmp_path: Path, ca: trustme.CA, name: str) -> tuple[Path, Path]:
    issued = ca.issue_cert(name, common_name=name)
    cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    issued.cert_chain_pems[0].write_to_path(cert)
    issued.private_key_pem.write_to_path(key)
    return cert, key


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def lync_pool(tmp_path: Path, ca: trustme.CA) -> Iterator[Daemon]:
    """lyncgate playing the Lync pool: mutual TLS with a certificate for fepool.example.test."""
    folder = tmp_path / "pool"
    folder.mkdir()
    cert, key = certificate(folder, ca, "fepool.example.test")
    ca.cert_pem.write_to_path(folder / "ca.pem")
    pool = Daemon(folder, loopback_node("fepool.example.test") + f"""
[tls]
certificate = "{cert}"
private_key = "{key}"
trusted_ca = "{folder / 'ca.pem'}"
verify_mode = "on"
""")
    yield pool
    pool.stop()


@contextlib.contextmanager
def s_server(cert: Path, key: Path, *options: str) -> Iterator[int]:
    """`openssl s_server` with this certificate on a free loopback port."""
    port = free_port()

    def ready() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    argv = [need("openssl"), "s_server", "-quiet", "-accept", f"127.0.0.1:{port}", "-cert",
            str(cert), "-key", str(key), "-naccept", "20", *options]
    with process(argv, ready=ready):
        yield port


@pytest.fixture
def rogue_tls(tmp_path: Path) -> Iterator[int]:
    """A TLS server whose certificate chains to a CA the node does not trust."""
    with s_server(*certificate(tmp_path, trustme.CA(), "rogue.example.test")) as port:
        yield port


@pytest.fixture
def picky_tls(tmp_path: Path, ca: trustme.CA) -> Iterator[int]:
    """A Lync pool stand-in with a certificate we trust that wants client certificates from
    another CA: under TLS 1.3 it refuses ours only after our side of the handshake is done."""
    folder = tmp_path / "picky"
    folder.mkdir()
    trustme.CA().cert_pem.write_to_path(folder / "other-ca.pem")
    # Without -verify_return_error s_server logs a bad client certificate and goes on.
    with s_server(*certificate(folder, ca, "fepool.example.test"), "-Verify", "1",
                  "-verify_return_error", "-CAfile", str(folder / "other-ca.pem")) as port:
        yield port


def records(srv_target: str = NODE, srv_port: int = 5061, node_ip: str = "127.0.0.1") -> list[str]:
    return [
        "--local=/test/",
        f"--host-record={NODE},{node_ip}",
        "--host-record=fepool.example.test,127.0.0.1",
        "--host-record=rogue.example.test,127.0.0.1",
        "--host-record=gw.other.test,127.0.0.1",
        "--host-record=pool.example.test,127.0.0.1",
        f"--srv-host=_sipfederationtls._tcp.example.test,{srv_target},{srv_port},0,0",
    ]


def doctor_config(tmp_path: Path, ca: trustme.CA, *, lync_port: int, rogue_port: int,
                  turn_port: int, turn_password: str) -> Path:
    cert, key = certificate(tmp_path, ca, NODE)
    ca.cert_pem.write_to_path(tmp_path / "trusted.pem")
    path = tmp_path / "doctor.toml"
    path.write_text(f"""
[node]
sip_tls_fqdn = "{NODE}"
address = "127.0.0.1"
[tls]
certificate = "{cert}"
private_key = "{key}"
trusted_ca = "{tmp_path / 'trusted.pem'}"
[global]
mssip_domain = "example.test"
[[lync_servers]]
name = "pool"
address = "fepool.example.test"
port = {lync_port}
[[lync_servers]]
name = "rogue"
address = "rogue.example.test"
port = {rogue_port}
[[stun_servers]]
name = "stun"
address = "127.0.0.1"
port = {turn_port}
[[turn_servers]]
name = "turn"
address = "127.0.0.1"
port = {turn_port}
username = "lync"
password = "{turn_password}"
""")
    return path


def run_doctor(config: Path, dns_port: int, capsys: pytest.CaptureFixture[str],
               *extra: str) -> tuple[int, dict[str, list[dict[str, Any]]]]:
    code = main(["doctor", "--config", str(config), "--dns-server", f"127.0.0.1:{dns_port}",
                 "--json", "--timeout", "2", *extra])
    by_check: dict[str, list[dict[str, Any]]] = {}
    for result in json.loads(capsys.readouterr().out):
        by_check.setdefault(result["check"], []).append(result)
    return code, by_check


def level(results: dict[str, list[dict[str, Any]]], prefix: str) -> list[str]:
    return [r["level"] for name, rs in results.items() if name.startswith(prefix) for r in rs]


def test_good_deployment_passes_and_each_broken_peer_fails_in_words(
    tmp_path: Path, ca: trustme.CA, lync_pool: Daemon, rogue_tls: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with dnsmasq(records()) as dns_port, coturn() as turn_port:
        config = doctor_config(tmp_path, ca, lync_port=lync_pool.tls, rogue_port=rogue_tls,
                               turn_port=turn_port, turn_password="secret")
        code, results = run_doctor(config, dns_port, capsys, "--pool", "pool.example.test")
    assert level(results, "A gw.example.test") == ["pass"]
    assert level(results, "pool pool.example.test") == ["pass"]
    assert level(results, "SRV _sipfederationtls") == ["pass"]
    assert level(results, "SAN gw.example.test") == ["pass"]
    assert level(results, "CN = SRV target") == ["pass"]
    assert level(results, "STUN stun") == ["pass"] and level(results, "TURN turn") == ["pass"]
    pool = results[f"TLS pool fepool.example.test:{lync_pool.tls}"][0]
    assert pool["level"] == "pass" and "OPTIONS answered 200" in pool["found"], pool
    rogue = results[f"TLS rogue rogue.example.test:{rogue_tls}"][0]
    assert rogue["level"] == "fail" and rogue["found"] == "handshake failed: unknown CA"
    assert code == 1  # the rogue server fails the run


def test_broken_dns_and_wrong_turn_password_are_reported(
    tmp_path: Path, ca: trustme.CA, capsys: pytest.CaptureFixture[str],
) -> None:
    broken = records(srv_target="gw.other.test", srv_port=5062, node_ip="127.0.0.9")
    with dnsmasq(broken) as dns_port, coturn() as turn_port:
        config = doctor_config(tmp_path, ca, lync_port=free_port(), rogue_port=free_port(),
                               turn_port=turn_port, turn_password="wrong")
        code, results = run_doctor(config, dns_port, capsys)
    a_record = results["A gw.example.test"][0]
    assert a_record["level"] == "fail" and "not 127.0.0.1" in a_record["found"]
    srv = results["SRV _sipfederationtls._tcp.example.test"][0]
    assert srv["level"] == "fail"
    assert "port 5062, not 5061" in srv["found"] and "outside example.test" in srv["found"]
    assert results["CN = SRV target"][0]["level"] == "fail"
    turn = results[next(k for k in results if k.startswith("TURN"))][0]
    assert turn["level"] == "fail" and "401" in turn["found"]
    assert code == 1


def test_missing_records_and_table_output(
    tmp_path: Path, ca: trustme.CA, capsys: pytest.CaptureFixture[str],
) -> None:
    with dnsmasq(["--local=/test/"]) as dns_port:
        config = doctor_config(tmp_path, ca, lync_port=free_port(), rogue_port=free_port(),
                               turn_port=free_port(), turn_password="x")
        code = main(["doctor", "--config", str(config), "--dns-server",
                     f"127.0.0.1:{dns_port}", "--timeout", "1"])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL  A gw.example.test" in out and "NXDOMAIN" in out
    assert "-> create an A record gw.example.test -> 127.0.0.1" in out
    assert "checks:" in out.splitlines()[-1]


def test_a_server_refusing_our_certificate_after_a_tls13_handshake_is_a_fail_in_words(
    tmp_path: Path, ca: trustme.CA, picky_tls: int, capsys: pytest.CaptureFixture[str],
) -> None:
    """Under TLS 1.3 the server's verdict on our client certificate (alert "unknown CA")
    arrives after our handshake has finished; doctor sends OPTIONS and waits for the answer,
    so the refusal is reported as the server refusing our certificate, with the reason."""
    with dnsmasq(records()) as dns_port:
        config = doctor_config(tmp_path, ca, lync_port=picky_tls, rogue_port=free_port(),
                               turn_port=free_port(), turn_password="x")
        code, results = run_doctor(config, dns_port, capsys)
    refused = results[f"TLS pool fepool.example.test:{picky_tls}"][0]
    assert refused["level"] == "fail", refused
    assert refused["found"] == "the server refused our certificate: unknown CA"
    assert "trusted root" in refused["action"]
    assert code == 1
