"""The README's first call: the daemon on the embedded default config (its listeners moved
to free ports, its state directory to the test's) answers `sipp -sn uac -s test-call`, and
the RTP a caller sends comes back."""

from __future__ import annotations

import re
import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.sip.message import Response
from gateway.sip.parse import parse_message
from tests.daemon.harness import ROOT, Daemon
from tests.peers import free_port, need

DEFAULT = ROOT / "gateway" / "config" / "default.toml"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Daemon]:
    text = DEFAULT.read_text()
    for name, placeholder in (("udp", "@UDP@"), ("tcp", "@TCP@"), ("tls", "@TLS@")):
        text = re.sub(rf"(?m)^{name} = \d+$", f"{name} = {placeholder}", text)
    text = re.sub(r"(?m)^port = 8080$", "port = 0", text)  # no API needed here
    text = text.replace('address = "127.0.0.1"\n',
                        'address = "127.0.0.1"\nstate_dir = "@STATE@"\n', 1)
    daemon = Daemon(tmp_path, text)
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.mark.peer
def test_sipps_builtin_uac_gets_the_test_call(node: Daemon, tmp_path: Path) -> None:
    done = subprocess.run(
        [need("sipp"), f"127.0.0.1:{node.udp}", "-sn", "uac", "-s", "test-call", "-m", "1",
         "-i", "127.0.0.1", "-p", str(free_port()), "-nostdin", "-timeout", "20s",
         "-timeout_error"], capture_output=True, text=True, timeout=35, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:]
    [ended] = node.events("call_ended")
    assert ended["reason"] == "BYE from the caller"


def test_the_test_calls_rtp_comes_back(node: Daemon) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sip, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as media:
        sip.bind(("127.0.0.1", 0))
        media.bind(("127.0.0.1", 0))
        sip.settimeout(5)
        media.settimeout(5)
        port, media_port = sip.getsockname()[1], media.getsockname()[1]
        sdp = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
               f"m=audio {media_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
        invite = (f"INVITE sip:test-call@example.org SIP/2.0\r\n"
                  f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-tc1;rport\r\n"
                  "From: <sip:me@example.org>;tag=me\r\nTo: <sip:test-call@example.org>\r\n"
                  "Call-ID: test-call-1\r\nCSeq: 1 INVITE\r\n"
                  f"Contact: <sip:me@127.0.0.1:{port}>\r\n"
                  "Max-Forwards: 70\r\nContent-Type: application/sdp\r\n"
                  f"Content-Length: {len(sdp)}\r\n\r\n{sdp}").encode()
        sip.sendto(invite, ("127.0.0.1", node.udp))
        ok = None
        while ok is None:
            answer = parse_message(sip.recv(65535))
            if isinstance(answer, Response) and answer.status >= 200:
                ok = answer
        assert ok.status == 200
        relay_port = int(re.search(rb"m=audio (\d+)", ok.body).group(1))  # type: ignore[union-attr]
        for seq in range(1, 4):
            packet = struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0xABCD) + b"\xd5" * 160
            media.sendto(packet, ("127.0.0.1", relay_port))
            back = media.recv(2048)
            assert back[2:4] == struct.pack("!H", seq) and back[12:] == packet[12:]
