"""`lyncgate doctor` through the console script: no DNS for a loopback-only node, failures in
words, results printed as they come (with a progress line on a terminal)."""

from __future__ import annotations

import contextlib
import os
import pty
import select
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests.cli.console import LYNCGATE, lyncgate
from tests.peers import free_port


@contextlib.contextmanager
def silent_udp() -> Iterator[tuple[int, socket.socket]]:
    """A UDP port that takes datagrams and never answers: a DNS or STUN server that is gone."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        yield int(sock.getsockname()[1]), sock


def received(sock: socket.socket) -> int:
    count = 0
    with contextlib.suppress(BlockingIOError):
        while True:
            sock.recv(4096)
            count += 1
    return count


def test_the_embedded_default_asks_no_dns_and_passes() -> None:
    """The embedded default is loopback only: `localhost` comes from /etc/hosts (RFC 6761),
    the DNS server named is never asked, no federation SRV is checked, and the self-signed
    certificate is a warning, not a failure."""
    with silent_udp() as (port, sock):
        done = lyncgate("doctor", "--dns-server", f"127.0.0.1:{port}", "--timeout", "1")
        asked = received(sock)
    assert asked == 0, "the DNS server was asked about a loopback-only node"
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASS  A localhost" in done.stdout
    assert "create an A record" not in done.stdout
    assert "_sipfederationtls" not in done.stdout
    assert "WARN  certificate" in done.stdout


def broken_config(tmp_path: Path, stun_ports: list[int], turn_port: int,
                  lync_port: int) -> Path:
    stun = "".join(f'[[stun_servers]]\nname = "stun{i}"\naddress = "127.0.0.1"\nport = {p}\n'
                   for i, p in enumerate(stun_ports))
    path = tmp_path / "broken.toml"
    path.write_text(f"""
[node]
sip_tls_fqdn = "gw.example.test"
address = "127.0.0.1"
[[lync_servers]]
name = "pool"
address = "127.0.0.1"
port = {lync_port}
{stun}
[[turn_servers]]
name = "edge"
address = "127.0.0.1"
port = {turn_port}
transport = "tcp"
username = "u"
password = "p"
""")
    return path


def test_failures_say_what_was_tried_what_happened_and_the_fix(tmp_path: Path) -> None:
    """A DNS server that never answers, a Lync port and a TURN port with nothing listening,
    a STUN server that never answers: each in words, never a dnspython class name, an empty
    'no answer: ' or asyncio's 'Connect call failed'."""
    with silent_udp() as (dns_port, _), silent_udp() as (stun_port, _):
        config = broken_config(tmp_path, [stun_port], free_port(), free_port())
        done = lyncgate("doctor", "--config", str(config), "--dns-server",
                        f"127.0.0.1:{dns_port}", "--timeout", "1")
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    for raw in ("LifetimeTimeout", "Timeout:", "no answer: \n", "Connect call failed",
                "ConnectionRefusedError"):
        assert raw not in out, out
    by_check = {line.split()[1]: line for line in out.splitlines() if line[:4] == "FAIL"}
    assert f"no answer from the DNS server 127.0.0.1:{dns_port} within 1 s" in by_check["A"]
    assert "TCP and TLS to 127.0.0.1:" in by_check["TLS"]
    assert "connection refused: nothing listens on that port" in by_check["TLS"]
    assert f"STUN binding request over UDP to 127.0.0.1:{stun_port}: no answer within 1 s" \
        in by_check["STUN"]
    assert "connection refused" in by_check["TURN"]
    # Every failure is followed by what to do.
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("FAIL"):
            assert lines[i + 1].strip().startswith("-> "), line
    assert "--dns-server ADDRESS:PORT" in out  # the fix for a DNS server that does not answer


def test_each_result_is_printed_as_soon_as_it_is_known(tmp_path: Path) -> None:
    """Through a pipe: the first results arrive while later checks still wait on the
    network, not all at once at the end."""
    with silent_udp() as (a, _), silent_udp() as (b, _), silent_udp() as (dns_port, _):
        config = broken_config(tmp_path, [a, b], free_port(), free_port())
        start = time.monotonic()
        proc = subprocess.Popen([LYNCGATE, "doctor", "--config", str(config), "--dns-server",
                                 f"127.0.0.1:{dns_port}", "--timeout", "1"],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        first = proc.stdout.readline()
        first_at = time.monotonic() - start
        rest = proc.stdout.read()
        proc.wait(timeout=30)
        end_at = time.monotonic() - start
    assert first.startswith("FAIL  A gw.example.test"), first + rest
    # Two STUN servers that never answer take a second each after the first result.
    assert end_at - first_at > 1.5, (first_at, end_at)


def test_a_terminal_shows_what_is_being_tried(tmp_path: Path) -> None:
    with silent_udp() as (stun_port, _), silent_udp() as (dns_port, _):
        config = broken_config(tmp_path, [stun_port], free_port(), free_port())
        controller, terminal = pty.openpty()
        proc = subprocess.Popen([LYNCGATE, "doctor", "--config", str(config), "--dns-server",
                                 f"127.0.0.1:{dns_port}", "--timeout", "1"],
                                stdout=terminal, stderr=terminal)
        os.close(terminal)
        chunks = []
        while True:
            ready, _, _ = select.select([controller], [], [], 30)
            if not ready:
                break
            try:
                data = os.read(controller, 65536)
            except OSError:  # the terminal's other side closed: the process is done
                break
            if not data:
                break
            chunks.append(data)
        os.close(controller)
        proc.wait(timeout=30)
    screen = b"".join(chunks).decode()
    assert f"... STUN stun0: binding request to 127.0.0.1:{stun_port}" in screen
    assert f"... DNS A gw.example.test from 127.0.0.1:{dns_port}" in screen
    # Each progress line is wiped before the result that ends it is written.
    assert "\r\x1b[KFAIL  STUN stun0" in screen


def test_a_loopback_node_named_outside_etc_hosts_is_a_warning_without_dns(
    tmp_path: Path,
) -> None:
    """A lab node on loopback under a name of its own: still nothing asked of DNS; the name
    missing from /etc/hosts is said, with the line to add."""
    path = tmp_path / "lab.toml"
    path.write_text('[node]\nsip_tls_fqdn = "gw.lab.test"\naddress = "127.0.0.1"\n')
    with silent_udp() as (port, sock):
        done = lyncgate("doctor", "--config", str(path), "--dns-server", f"127.0.0.1:{port}",
                        "--timeout", "1")
        asked = received(sock)
    assert asked == 0
    assert done.returncode == 0, done.stdout
    assert "WARN  A gw.lab.test" in done.stdout
    assert "-> add `127.0.0.1 gw.lab.test` to /etc/hosts" in done.stdout
