"""Real Debian peers for integration tests, started on loopback and always stopped."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 when asked."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


def need(binary: str) -> str:
    path = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin:/sbin")
    if path is None:
        pytest.fail(f"{binary} is not installed: run scripts/install --test")
    return path


@contextlib.contextmanager
def process(argv: Sequence[str], ready: Callable[[], bool] | None = None,
            timeout: float = 10.0) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while ready is not None and not ready():
            if proc.poll() is not None:
                out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                pytest.fail(f"{argv[0]} exited with {proc.returncode}: {out[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"{argv[0]} not ready after {timeout} s")
            time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def dns_answers(port: int) -> bool:
    """Whether a DNS server on 127.0.0.1:port answers a query (any rcode)."""
    query = bytes.fromhex("abcd01000001000000000000") + b"\x04ping\x04test\x00\x00\x01\x00\x01"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        s.sendto(query, ("127.0.0.1", port))
        try:
            return s.recv(512)[:2] == b"\xab\xcd"
        except OSError:
            return False


@contextlib.contextmanager
def dnsmasq(records: Sequence[str]) -> Iterator[int]:
    """dnsmasq answering only `records` (dnsmasq options such as `--srv-host=...`) on a free
    loopback port; yields the port."""
    port = free_port()
    argv = [need("dnsmasq"), "--keep-in-foreground", "--no-resolv", "--no-hosts",
            "--conf-file=/dev/null", f"--port={port}", "--listen-address=127.0.0.1",
            "--bind-interfaces", "--user=root", "--pid-file=", "--log-facility=-",
            "--local-ttl=60", *records]
    with process(argv, ready=lambda: dns_answers(port)):
        yield port


SCENARIOS = Path(__file__).parent / "scenarios"


def sipp(target: str, scenario: str, *args: str, status: int | None = None,
         timeout: float = 30.0, workdir: str = "/tmp",
         fill: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run SIPp (Debian's sip-tester) to completion, bounded in time. `status` fills the
    scenario's @STATUS@ placeholder, `fill` any other. Exit 0 means every call went as the
    scenario says."""
    text = (SCENARIOS / scenario).read_text()
    if status is not None:
        text = text.replace("@STATUS@", str(status))
    for placeholder, value in (fill or {}).items():
        text = text.replace(placeholder, value)
    path = f"{workdir}/{scenario}"
    with open(path, "w") as out:
        out.write(text)
    argv = [need("sipp"), target, "-sf", path, "-i", "127.0.0.1", "-nostdin",
            "-timeout", f"{int(timeout)}s", "-timeout_error", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 15,
                          check=False, cwd=workdir)


def stun_answers(port: int) -> bool:
    """Whether a STUN server on 127.0.0.1:port answers a binding request."""
    request = bytes.fromhex("000100002112a442") + b"0123456789ab"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        s.sendto(request, ("127.0.0.1", port))
        try:
            return s.recv(2048)[8:20] == b"0123456789ab"
        except OSError:
            return False


@contextlib.contextmanager
def coturn(user: str = "lync", password: str = "secret",
           realm: str = "example.test") -> Iterator[int]:
    """coturn with long-term credentials on a free loopback port (UDP and TCP); yields it."""
    port = free_port()
    relay_low = 20000 + (port % 20000)
    argv = [need("turnserver"), "-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1",
            f"--listening-port={port}", "--lt-cred-mech", f"--user={user}:{password}",
            f"--realm={realm}", "--no-tls", "--no-dtls", "--no-cli", "--allow-loopback-peers",
            f"--min-port={relay_low}", f"--max-port={relay_low + 200}", "--log-file=stdout",
            "--simple-log", "--pidfile=", "--no-software-attribute"]
    with process(argv, ready=lambda: stun_answers(port)):
        yield port


@contextlib.contextmanager
def stunnel(folder: Path, *, accept: int, connect: int, cert: Path, check_host: str = "",
            client: bool = True) -> Iterator[subprocess.Popen[bytes]]:
    """stunnel4 on 127.0.0.1:`accept`, relaying to 127.0.0.1:`connect` with `cert` and the
    CA in `folder`/ca.pem: as a TLS client (`client`, the name it checks in `check_host`), or
    as a TLS server terminating connections made to it; ready once it listens."""
    conf = folder / "stunnel.conf"
    conf.write_text(
        f"foreground = yes\npid =\n[sip]\n{'client = yes' if client else ''}\n"
        f"accept = 127.0.0.1:{accept}\nconnect = 127.0.0.1:{connect}\ncert = {cert}\n"
        f"CAfile = {folder / 'ca.pem'}\nverifyChain = yes\n"
        + (f"checkHost = {check_host}\n" if check_host else ""))

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", accept)) == 0

    with process([need("stunnel4"), str(conf)], ready=listening) as proc:
        yield proc
