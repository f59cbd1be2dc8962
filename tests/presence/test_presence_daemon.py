"""Presence against the daemon as users run it (`lyncgate run`), with SIPp as the
subscriber: a standard client over UDP, Lync's forms over mutual TLS through stunnel, a
subscription held across a reload that removes its rule; hostile input and a flood over
raw UDP; the avatar over HTTP."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from gateway.sip.message import Response
from gateway.sip.parse import parse_message
from tests.daemon.harness import Daemon, options
from tests.kit.nodes import loopback_node
from tests.kit.presence import CONFIG
from tests.peers import SCENARIOS, free_port, need, stunnel

pytestmark = pytest.mark.peer

RULES = CONFIG  # the rooms the in-process presence tests use
LIMITS = "\n[presence]\nmax_subscriptions = 40\nmax_subscriptions_per_source = 25\n"
OPEN = "&lt;basic&gt;open&lt;/basic&gt;"
CLOSED = "&lt;basic&gt;closed&lt;/basic&gt;"


def config(avatar_port: int, tls: str = 'verify_mode = "off"', rules: str = RULES) -> str:
    return (loopback_node() + f"\n[tls]\n{tls}\n\n[avatar]\nport = {avatar_port}\n" + LIMITS
            + rules)


def run_sipp(target: str, scenario: str, expect: str, tmp: Path, *args: str,
             background: bool = False) -> subprocess.Popen[str] | subprocess.CompletedProcess[str]:
    path = tmp / scenario
    path.write_text((SCENARIOS / scenario).read_text().replace("@EXPECT@", expect))
    argv = [need("sipp"), target, "-sf", str(path), "-i", "127.0.0.1", "-nostdin", "-m", "1",
            "-p", str(free_port()), "-timeout", "40s", "-timeout_error", *args]
    if background:
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, cwd=tmp)
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False,
                          cwd=tmp)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path, config(free_port()))
    yield d
    d.stop()


def test_a_standard_client_subscribes_refreshes_and_unsubscribes_over_udp(
        daemon: Daemon, tmp_path: Path) -> None:
    target = f"127.0.0.1:{daemon.udp}"
    good = run_sipp(target, "presence_uac.xml", OPEN, tmp_path, "-s", "london-room003",
                    "-t", "u1")
    assert good.returncode == 0, good.stdout + good.stderr
    typo = run_sipp(target, "presence_uac.xml", CLOSED, tmp_path, "-s", "london-rooom003",
                    "-t", "u1")
    assert typo.returncode == 0, typo.stdout + typo.stderr
    assert len(daemon.events("presence_unsubscribed")) == 2


@pytest.fixture
def mtls(tmp_path: Path) -> Iterator[tuple[Daemon, trustme.CA]]:
    ca = trustme.CA()
    node = ca.issue_cert("gw.example.com")
    node.cert_chain_pems[0].write_to_path(tmp_path / "node.pem")
    node.private_key_pem.write_to_path(tmp_path / "node.key")
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    tls = (f'verify_mode = "on"\ncertificate = "{tmp_path / "node.pem"}"\n'
           f'private_key = "{tmp_path / "node.key"}"\ntrusted_ca = "{tmp_path / "ca.pem"}"')
    d = Daemon(tmp_path, config(free_port(), tls))
    yield d, ca
    d.stop()


def test_lync_subscribes_over_mutual_tls_single_and_batched(
        mtls: tuple[Daemon, trustme.CA], tmp_path: Path) -> None:
    daemon, ca = mtls
    pool = ca.issue_cert("fepool.example.com")
    pool.private_key_and_cert_chain_pem.write_to_path(tmp_path / "pool.pem")
    accept = free_port()
    card = ("&lt;availability&gt;3500&lt;/availability&gt;.*"
            "&lt;displayName&gt;Board room&lt;/displayName&gt;.*"
            "&lt;description&gt;The fourth-floor board room&lt;/description&gt;.*"
            "/avatars/service/Board%20room")
    with stunnel(tmp_path, accept=accept, connect=daemon.tls, cert=tmp_path / "pool.pem",
                 check_host="gw.example.com"):
        single = run_sipp(f"127.0.0.1:{accept}", "presence_lync_uac.xml", card, tmp_path,
                          "-s", "meet.board", "-t", "t1")
        assert single.returncode == 0, single.stdout + single.stderr
        batch = run_sipp(f"127.0.0.1:{accept}", "presence_lync_batch_uac.xml", "", tmp_path,
                         "-s", "paris-room042", "-t", "t1")
        assert batch.returncode == 0, batch.stdout + batch.stderr
    assert daemon.wait_event("tls_accepted")[0]["client_cert"] is True
    subscribed = daemon.events("presence_subscribed")
    assert [e["resources"] for e in subscribed] == [1, 2]


def test_a_reload_that_removes_the_rule_notifies_the_subscriber(
        daemon: Daemon, tmp_path: Path) -> None:
    sipp = run_sipp(f"127.0.0.1:{daemon.udp}", "presence_reload_uac.xml", "", tmp_path, "-s",
                    "oslo-room001", "-t", "u1", background=True)
    assert isinstance(sipp, subprocess.Popen)
    try:
        daemon.wait_event("presence_subscribed")
        daemon.write_config(config(free_port(), rules=RULES.split("[[routing_rules]]")[0]))
        daemon.signal(signal.SIGHUP)
        out, _ = sipp.communicate(timeout=60)
    finally:
        if sipp.poll() is None:
            sipp.kill()
            sipp.wait()
    assert sipp.returncode == 0, out
    changed = daemon.wait_event("presence_changed_on_reload")
    assert changed[0]["subscriptions"] == 1


def subscribe(port: int, local: int, call_id: str, *, event: str = "presence",
              body: bytes = b"", content_type: str = "") -> bytes:
    head = (f"SUBSCRIBE sip:london-room003@vc.example.com SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK-{call_id};rport\r\n"
            "From: <sip:flood@example.com>;tag=f\r\nTo: <sip:london-room003@vc.example.com>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 SUBSCRIBE\r\nMax-Forwards: 70\r\n"
            f"Contact: <sip:flood@127.0.0.1:{local}>\r\nEvent: {event}\r\nExpires: 600\r\n"
            "Supported: ms-piggyback-first-notify\r\n"
            + (f"Content-Type: {content_type}\r\n" if content_type else "")
            + f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def final(s: socket.socket) -> Response:
    while True:
        message = parse_message(s.recv(65535))
        if isinstance(message, Response) and message.status >= 200:
            return message


def test_bad_input_and_a_flood_get_their_answers_and_nothing_else_is_affected(
        daemon: Daemon) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(3)
        local = s.getsockname()[1]
        to = ("127.0.0.1", daemon.udp)
        s.sendto(subscribe(daemon.udp, local, "ev", event="dialog"), to)
        bad = final(s)
        assert bad.status == 489 and bad.headers.get("Allow-Events") == "presence"
        s.sendto(subscribe(daemon.udp, local, "xml", body=b"<batchSub><resource",
                           content_type="application/msrtc-adrl-categorylist+xml"), to)
        malformed = final(s)
        assert malformed.status == 400 and "malformed XML" in malformed.reason
        huge = ("<batchSub><adhocList><resource uri='sip:a@b'/></adhocList><categoryList>"
                + "<category name='state'/>" * 2000 + "</categoryList></batchSub>").encode()
        s.sendto(subscribe(daemon.udp, local, "huge", body=huge,
                           content_type="application/msrtc-adrl-categorylist+xml"), to)
        assert final(s).status == 400
        statuses = []
        for i in range(30):
            s.sendto(subscribe(daemon.udp, local, f"flood-{i}"), to)
            answer = final(s)
            statuses.append(answer.status)
            if answer.status == 503:
                assert answer.headers.get("Retry-After") == "30"
        assert statuses == [200] * 25 + [503] * 5
        s.sendto(options(daemon.udp, local, call_id="after-flood"), to)
        assert final(s).status == 200
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        other.bind(("127.0.0.2", 0))
        other.settimeout(3)
        other.sendto(subscribe(daemon.udp, other.getsockname()[1], "other"),
                     ("127.0.0.1", daemon.udp))
        assert final(other).status == 200  # another source is still served
    assert daemon.proc.poll() is None


def test_the_avatar_is_served_over_http_and_unknown_names_are_404(tmp_path: Path) -> None:
    port, api = free_port(), free_port()
    d = Daemon(tmp_path, config(port) + f"\n[api]\nport = {api}\n")
    try:
        d.wait_event("avatar_listening")
        explained = f"http://127.0.0.1:{api}/dialplan?alias=oslo-room001@vc.example.com"
        with urllib.request.urlopen(explained, timeout=5) as response:
            presence = json.loads(response.read())["presence"]
        assert presence["state"] == "Available"
        assert presence["avatar"] == f"http://gw.example.com:{port}/avatars/rule/rooms"
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{base}/avatars/rule/rooms", timeout=5) as response:
            assert response.headers["Content-Type"] == "image/png"
            assert response.headers["Cache-Control"].startswith("public")
            assert response.read().startswith(b"\x89PNG")
        for path in ("/avatars/rule/nobody", "/status", "/metrics"):
            with pytest.raises(urllib.error.HTTPError) as missing:
                urllib.request.urlopen(base + path, timeout=5)
            assert missing.value.code == 404
    finally:
        d.stop()
