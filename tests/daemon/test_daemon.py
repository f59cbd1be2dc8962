"""`lyncgate run` end to end against real peers on loopback: SIPp over UDP and TCP, SIPp behind
stunnel for mutual TLS, Python's ssl for a refused client, hostile datagrams, SIGHUP reloads
(good and bad) and the SIGTERM drain."""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from gateway.calls.cdr import CdrStore
from gateway.calls.registrar import BindingStore
from gateway.sip.message import Response
from gateway.sip.parse import parse_message
from tests.daemon.harness import Daemon, options
from tests.kit.nodes import BASE, RULES
from tests.peers import SCENARIOS, free_port, need, sipp, stunnel

pytestmark = pytest.mark.peer

# A bare word as the destination: routed, but there is no SIP address to place the call at.
UNPLACEABLE = "replace = 'routed'\n"


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path, BASE + RULES + UNPLACEABLE)
    yield d
    d.stop()


def status_of(data: bytes) -> int:
    message = parse_message(data)
    assert isinstance(message, Response)
    return message.status


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_sipp_options_and_invites_over_udp_and_tcp(
    daemon: Daemon, tmp_path: Path, transport: str
) -> None:
    port = daemon.udp if transport == "u1" else daemon.tcp
    target = f"127.0.0.1:{port}"
    common = ("-t", transport, "-m", "20", "-r", "50", "-p", str(free_port()))
    probed = sipp(target, "options_uac.xml", *common, workdir=str(tmp_path))
    assert probed.returncode == 0, probed.stdout + probed.stderr
    unknown = sipp(target, "invite_refused_uac.xml", "-s", "nobody", *common, status=404,
                   workdir=str(tmp_path))
    assert unknown.returncode == 0, unknown.stdout + unknown.stderr
    # routed by the rule, but "routed" is no SIP address and the rule names no server
    routed = sipp(target, "invite_refused_uac.xml", "-s", "routed", *common, status=404,
                  workdir=str(tmp_path))
    assert routed.returncode == 0, routed.stdout + routed.stderr
    rejected = daemon.wait_event("call_rejected", 20)
    assert rejected[0]["reason"].startswith("no service alias and no routing rule matches")
    assert daemon.wait_event("call_routed", 20)[0]["rule"] == "endpoints"


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_calls_through_the_b2bua_to_a_sipp_uas(tmp_path: Path, transport: str) -> None:
    """SIPp UAC -> lyncgate -> SIPp UAS: INVITE/180/200/ACK/BYE on each leg, the rule's
    replace string giving the outbound target."""
    uas_port = free_port()
    leg = "tcp" if transport == "t1" else "udp"
    rules = (RULES.replace("match = 'routed'", "match = 'call-(\\d+)'")
             + f"replace = 'uas-\\1@127.0.0.1:{uas_port};transport={leg}'\n")
    daemon = Daemon(tmp_path, BASE + rules)
    uas = subprocess.Popen(
        [need("sipp"), "-sf", str(SCENARIOS / "uas_rr.xml"), "-i", "127.0.0.1", "-p",
         str(uas_port), "-t", transport, "-m", "5", "-nostdin", "-timeout", "30s",
         "-timeout_error"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    try:
        time.sleep(0.3)
        port = daemon.udp if transport == "u1" else daemon.tcp
        uac = sipp(f"127.0.0.1:{port}", "uac_rr.xml", "-s", "call-42", "-t", transport,
                   "-m", "5", "-r", "10", "-p", str(free_port()), workdir=str(tmp_path))
        assert uac.returncode == 0, uac.stdout + uac.stderr
        out, _ = uas.communicate(timeout=30)
        assert uas.returncode == 0, out
    finally:
        if uas.poll() is None:
            uas.kill()
        daemon.stop()
    placed = daemon.events("call_placed")
    assert len(placed) == 5 and placed[0]["uri"] == (
        f"sip:uas-42@127.0.0.1:{uas_port};transport={leg}")
    assert len(daemon.events("call_connected")) == 5
    assert {e["reason"] for e in daemon.events("call_ended")} == {"BYE from the caller"}
    rows = CdrStore(tmp_path / "state" / "cdr.sqlite3").recent()
    assert len(rows) == 5 and {r["ended_by"] for r in rows} == {"caller"}
    assert all(r["answered"] for r in rows)


def test_hostile_datagrams_get_answers_or_are_dropped_and_the_node_keeps_serving(
    daemon: Daemon,
) -> None:
    port = daemon.udp
    bad_version = options(port, 0).replace(b"OPTIONS sip:ping@127.0.0.1:%d SIP/2.0" % port,
                                           b"OPTIONS sip:ping@127.0.0.1 SIP/3.0")
    assert status_of(daemon.ask_udp(bad_version)) == 505
    bad_cseq = options(port, 0).replace(b"CSeq: 1 OPTIONS", b"CSeq: one OPTIONS")
    answer = parse_message(daemon.ask_udp(bad_cseq))
    assert isinstance(answer, Response) and answer.status == 400 and "CSeq" in answer.reason
    # Without a Call-ID the response still has a Via to go by: 400 naming what is missing
    # (RFC 4475 3.1.2.18); without a Via nobody can be answered: dropped and logged.
    no_call_id = options(port, 0).replace(b"Call-ID: probe\r\n", b"")
    missing = parse_message(daemon.ask_udp(no_call_id))
    assert isinstance(missing, Response) and missing.status == 400
    assert "Call-ID" in missing.reason
    no_via = b"".join(line for line in options(port, 0).splitlines(keepends=True)
                      if not line.startswith(b"Via:"))
    with pytest.raises(TimeoutError):
        daemon.ask_udp(no_via, timeout=0.5)
    assert daemon.wait_event("message_dropped")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for junk in (b"\x00\xff" * 700, b"SIP/2.0 200 OK\r\n\r\n", b"\r\n\r\n", b"INVITE"):
            s.sendto(junk, ("127.0.0.1", port))
    assert status_of(daemon.ask_udp(options(port, 0, call_id="after"))) == 200
    assert daemon.proc.poll() is None


def test_sighup_applies_a_good_config_and_keeps_the_old_one_on_a_bad_one(
    daemon: Daemon, tmp_path: Path
) -> None:
    target = f"127.0.0.1:{daemon.udp}"
    args = ("-t", "u1", "-m", "1", "-p", str(free_port()))
    daemon.write_config(BASE + RULES.replace("'routed'", "'(routed|newly)'") + UNPLACEABLE)
    daemon.signal(signal.SIGHUP)
    daemon.wait_event("config_reloaded")
    ok = sipp(target, "invite_refused_uac.xml", "-s", "newly", *args, status=404,
              workdir=str(tmp_path))
    assert ok.returncode == 0, ok.stdout
    assert [e["alias"] for e in daemon.events("call_routed")][-1].startswith("sip:newly@")
    daemon.write_config(BASE + RULES.replace("'routed'", "'(unbalanced'") + UNPLACEABLE)
    daemon.signal(signal.SIGHUP)
    refused = daemon.wait_event("reload_refused")
    assert any("routing_rules[0].match: invalid regex" in p for p in refused[0]["problems"])
    still = sipp(target, "invite_refused_uac.xml", "-s", "newly", *args, status=404,
                 workdir=str(tmp_path))
    assert still.returncode == 0, still.stdout
    assert len(daemon.events("call_routed")) == 2  # the running rules still route it


def test_sigterm_drains_and_exits_cleanly(daemon: Daemon) -> None:
    assert status_of(daemon.ask_udp(options(daemon.udp, 0))) == 200
    started = time.monotonic()
    assert daemon.stop() == 0
    assert time.monotonic() - started < 35
    assert daemon.events("draining") and daemon.events("node_stopped")


# -- TLS -------------------------------------------------------------------------------------
@pytest.fixture
def mtls(tmp_path: Path) -> Iterator[tuple[Daemon, trustme.CA]]:
    ca = trustme.CA()
    node = ca.issue_cert("gw.example.com")
    node.cert_chain_pems[0].write_to_path(tmp_path / "node.pem")
    node.private_key_pem.write_to_path(tmp_path / "node.key")
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    text = (BASE + RULES).replace('verify_mode = "off"', (
        f'verify_mode = "on"\ncertificate = "{tmp_path / "node.pem"}"\n'
        f'private_key = "{tmp_path / "node.key"}"\ntrusted_ca = "{tmp_path / "ca.pem"}"'
    ))
    d = Daemon(tmp_path, text)
    yield d, ca
    d.stop()


def test_sipp_through_stunnel_with_a_trusted_client_certificate(
    mtls: tuple[Daemon, trustme.CA], tmp_path: Path
) -> None:
    daemon, ca = mtls
    client = ca.issue_cert("fepool.example.com")
    client.private_key_and_cert_chain_pem.write_to_path(tmp_path / "client.pem")
    accept = free_port()
    with stunnel(tmp_path, accept=accept, connect=daemon.tls, cert=tmp_path / "client.pem",
                 check_host="gw.example.com"):
        done = sipp(f"127.0.0.1:{accept}", "invite_refused_uac.xml", "-s", "nobody", "-t",
                    "t1", "-m", "5", "-p", str(free_port()), status=404, workdir=str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    accepted = daemon.wait_event("tls_accepted")
    assert accepted[0]["client_cert"] is True


@pytest.mark.parametrize("client", ["no certificate", "untrusted CA"])
def test_mutual_tls_refuses_clients_and_logs_the_reason(
    mtls: tuple[Daemon, trustme.CA], tmp_path: Path, client: str
) -> None:
    daemon, ca = mtls
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    if client == "untrusted CA":
        rogue = trustme.CA().issue_cert("rogue.example.com")
        rogue.private_key_and_cert_chain_pem.write_to_path(tmp_path / "rogue.pem")
        ctx.load_cert_chain(tmp_path / "rogue.pem")
    with socket.create_connection(("127.0.0.1", daemon.tls), timeout=5) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="gw.example.com") as tls:
                tls.sendall(options(daemon.tls, 0, "TLS"))
                assert tls.recv(65535) == b""  # TLS 1.3: refused after the handshake
        except (ssl.SSLError, ConnectionError):
            pass
    failed = daemon.wait_event("tls_handshake_failed")
    expected = "no client certificate" if client == "no certificate" else "unknown CA"
    assert failed[0]["reason"] == expected
    assert status_of(daemon.ask_udp(options(daemon.udp, 0, call_id="still"))) == 200


def test_run_without_arguments_serves_the_embedded_default(tmp_path: Path) -> None:
    """The README's first command: the default config on loopback 5060/5061, a self-signed
    certificate made in the state directory and said so in the log."""
    for port, kind in ((5060, socket.SOCK_DGRAM), (5060, socket.SOCK_STREAM),
                       (5061, socket.SOCK_STREAM)):
        with socket.socket(socket.AF_INET, kind) as s:
            if s.connect_ex(("127.0.0.1", port)) == 0 and kind == socket.SOCK_STREAM:
                pytest.skip(f"port {port} is taken on this machine")
    import os
    import sys

    from tests.daemon.harness import ROOT

    env = {**os.environ, "STATE_DIRECTORY": str(tmp_path / "state")}
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run"], cwd=ROOT,
                                env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(0.3)
                answer = b""
                for _ in range(40):
                    s.sendto(options(5060, 0), ("127.0.0.1", 5060))
                    try:
                        answer = s.recv(65535)
                        break
                    except OSError:
                        continue
            assert status_of(answer) == 200
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(40)
    text = log.read_text()
    assert "tls_self_signed_certificate" in text
    assert (tmp_path / "state").is_dir() and any((tmp_path / "state").iterdir())
    assert proc.returncode == 0


def test_sipp_registers_with_digest_and_the_binding_is_kept(tmp_path: Path) -> None:
    """An independent Digest implementation (SIPp's, MD5 only) against the registrar."""
    device = ('\n[[devices]]\nalias = "room12@vc.example.com"\nusername = "room12"\n'
              'password = "s3cret!"\ndigest = ["MD5"]\n')
    daemon = Daemon(tmp_path, BASE + device)
    try:
        done = sipp(f"127.0.0.1:{daemon.udp}", "register_uac.xml", "-s", "room12", "-au",
                    "room12", "-ap", "s3cret!", "-m", "1", "-p", str(free_port()),
                    workdir=str(tmp_path))
        assert done.returncode == 0, done.stdout + done.stderr
        wrong = sipp(f"127.0.0.1:{daemon.udp}", "register_uac.xml", "-s", "room12", "-au",
                     "room12", "-ap", "guess", "-m", "1", "-p", str(free_port()),
                     "-timeout", "3s", workdir=str(tmp_path))
        assert wrong.returncode != 0  # a second 401 instead of 200
    finally:
        daemon.stop()
    [registered] = daemon.events("registered")
    assert registered["aor"] == "room12@vc.example.com" and registered["expires"] == 600
    store = BindingStore(tmp_path / "state" / "registrations.sqlite3")
    assert [b.aor for b in store.all(time.time())] == ["room12@vc.example.com"]
