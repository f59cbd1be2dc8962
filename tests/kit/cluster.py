"""Daemon nodes of one cluster on 127.0.0.2-4 (tests/daemon/harness.py), each in its own
directory, sharing a test's PostgreSQL database; and the CLI run against them."""

from __future__ import annotations

import contextlib
import hashlib
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import trustme

from tests.daemon.harness import ROOT, Daemon

# A room system that registers (Digest MD5, password "s3cret!") and the rule that calls
# it by its registrations alone: 'room1' reaches it wherever it registered.
ROOM = """
[[devices]]
alias = "room1@vc.example.com"
username = "room1"
password = "s3cret!"
digest = ["MD5"]

[[routing_rules]]
name = "rooms"
priority = 10
protocols = ["sip"]
match = 'room(\\d+)'
replace = 'room\\1@vc.example.com'
target = "registered_only"
"""


def node_text(name: str, host: str, database: str, links: Path | None = None) -> str:
    """A node's local file: only what is its own (the shared rest is pushed). With `links`
    (a folder from `cluster_ca`), its certificate and the cluster's CA: calls between nodes
    over its node-to-node listener (on the port the harness calls @TLS@)."""
    tls = (f'certificate = "{links / name}.pem"\nprivate_key = "{links / name}.key"\n'
           if links else "")
    link = f'trusted_ca = "{links}/ca.pem"\nport = @TLS@\n' if links else ""
    return (f'[node]\nname = "{name}"\nsip_tls_fqdn = "{name}.example.com"\n'
            f'address = "{host}"\nstate_dir = "@STATE@"\n\n'
            f'[listen]\nudp = @UDP@\ntcp = @TCP@\ntls = 0\n\n[tls]\nverify_mode = "off"\n{tls}\n'
            '[avatar]\nport = 0\n\n'
            f'[cluster]\ndatabase = "{database}"\nheartbeat_seconds = 1\n{link}')


def cluster_ca(folder: Path, count: int = 3) -> Path:
    """A cluster CA (`folder`/ca.pem) and a certificate for each node n1..n<count>."""
    folder.mkdir()
    ca = trustme.CA()
    ca.cert_pem.write_to_path(folder / "ca.pem")
    for n in range(1, count + 1):
        cert = ca.issue_cert(f"n{n}.example.com", f"127.0.0.{n + 1}")
        cert.cert_chain_pems[0].write_to_path(folder / f"n{n}.pem")
        cert.private_key_pem.write_to_path(folder / f"n{n}.key")
    return folder


@contextlib.contextmanager
def cluster_nodes(tmp: Path, database: str, count: int = 3, *, links: Path | None = None,
                  extra: str = "") -> Iterator[list[Daemon]]:
    """`count` nodes; `extra` is added to each local file (devices, rules)."""
    nodes: list[Daemon] = []
    try:
        for n in range(1, count + 1):
            home = tmp / f"n{n}"
            home.mkdir()
            nodes.append(Daemon(home, node_text(f"n{n}", f"127.0.0.{n + 1}", database, links)
                                + extra, host=f"127.0.0.{n + 1}"))
        yield nodes
    finally:
        for daemon in nodes:
            daemon.stop(grace=10)


def lyncgate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)


class TcpDevice:
    """A SIP device behind NAT, as a node sees it: one TCP connection (its flow) to the node
    it registers at, under a Via and Contact nobody can reach (TEST-NET-1), so that a call
    reaches it only over that connection. It registers with Digest MD5, answers an INVITE
    with 200 (its Record-Route echoed, the offer's first audio format taken) and a BYE with
    200; every request it received is kept as text."""

    CONTACT_HOST = "192.0.2.1:5999"

    def __init__(self, host: str, port: int, user: str, password: str,
                 domain: str = "vc.example.com") -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.target = f"{host}:{port}"
        self.user, self.password, self.domain = user, password, domain
        self.contact = f"sip:{user}@{self.CONTACT_HOST};transport=tcp"
        self.requests: list[str] = []
        self._buffer = b""

    def register(self) -> None:
        self._register(1, "")
        challenge = self.read()
        assert challenge.startswith("SIP/2.0 401"), challenge
        fields = dict(re.findall(r'(\w+)="?([^",]+)"?', _header(challenge, "WWW-Authenticate")))
        uri = f"sip:{self.target};transport=tcp"
        ha1 = _md5(f"{self.user}:{fields['realm']}:{self.password}")
        ha2 = _md5(f"REGISTER:{uri}")
        realm, nonce, cnonce = fields["realm"], fields["nonce"], "0a4f113b"
        answer = (f'Digest username="{self.user}", realm="{realm}", nonce="{nonce}", '
                  f'uri="{uri}", algorithm=MD5, ')
        if "qop" in fields:
            digest = _md5(f"{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}")
            answer += f'qop=auth, nc=00000001, cnonce="{cnonce}", response="{digest}"'
        else:
            answer += f'response="{_md5(f"{ha1}:{nonce}:{ha2}")}"'
        self._register(2, f"Authorization: {answer}\r\n")
        ok = self.read()
        assert ok.startswith("SIP/2.0 200"), ok

    def _register(self, cseq: int, auth: str) -> None:
        aor = f"sip:{self.user}@{self.domain}"
        self.sock.sendall((
            f"REGISTER sip:{self.target};transport=tcp SIP/2.0\r\n"
            f"Via: SIP/2.0/TCP {self.CONTACT_HOST};branch=z9hG4bK-reg{cseq}\r\n"
            f"From: <{aor}>;tag=dev1\r\nTo: <{aor}>\r\nCall-ID: register-{self.user}\r\n"
            f"CSeq: {cseq} REGISTER\r\nContact: <{self.contact}>\r\nExpires: 600\r\n"
            f"Max-Forwards: 70\r\n{auth}Content-Length: 0\r\n\r\n").encode())

    def answer_call(self) -> str:
        """The next INVITE, answered 200 with an SDP answer; returned as received."""
        invite = self.expect("INVITE")
        fmt = re.search(r"m=audio \d+ RTP/AVP (\d+)", invite)
        body = ("v=0\r\no=dev 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                f"m=audio 4000 RTP/AVP {fmt.group(1) if fmt else 0}\r\n")
        self.reply(invite, 200, f"Contact: <{self.contact}>\r\nContent-Type: application/sdp"
                   "\r\n", body, tag=";tag=device")
        return invite

    def expect(self, method: str) -> str:
        """The next request, which must be `method` (a BYE is answered 200)."""
        message = self.read()
        assert message.startswith(f"{method} "), message
        self.requests.append(message)
        if method == "BYE":
            self.reply(message, 200)
        return message

    def reply(self, request: str, status: int, extra: str = "", body: str = "",
              tag: str = "") -> None:
        copied = "".join(f"{name}: {value}\r\n" for name, value in _lines(request)
                         if name.lower() in ("via", "record-route", "from", "call-id", "cseq"))
        to = _header(request, "To") + (tag if ";tag=" not in _header(request, "To") else "")
        self.sock.sendall((f"SIP/2.0 {status} OK\r\n{copied}To: {to}\r\n{extra}"
                           f"Content-Length: {len(body)}\r\n\r\n{body}").encode())

    def read(self) -> str:
        while b"\r\n\r\n" not in self._buffer:
            self._fill()
        head, _, rest = self._buffer.partition(b"\r\n\r\n")
        found = re.search(rb"(?im)^(?:content-length|l)\s*:\s*(\d+)", head)
        length = int(found.group(1)) if found else 0
        while len(rest) < length:
            self._fill()
            head, _, rest = self._buffer.partition(b"\r\n\r\n")
        self._buffer = rest[length:]
        return (head + b"\r\n\r\n" + rest[:length]).decode()

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the node closed the device's connection")
        self._buffer += data

    def close(self) -> None:
        self.sock.close()


def _lines(message: str) -> list[tuple[str, str]]:
    head = message.split("\r\n\r\n", 1)[0].split("\r\n")[1:]
    return [(name.strip(), value.strip()) for name, _, value in
            (line.partition(":") for line in head)]


def _header(message: str, name: str) -> str:
    return next(v for n, v in _lines(message) if n.lower() == name.lower())


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()
