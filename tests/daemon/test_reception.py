"""The Virtual Reception against a running daemon, as callers reach it: SIPp keys a room's
number with its own RFC 4733 captures and is handed on by REFER to that room; the prompt a
caller hears is speech (ffmpeg decodes it), sent with the codec's RTP timing."""

from __future__ import annotations

import itertools
import re
import shutil
import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.sip.message import Response
from gateway.sip.parse import parse_message
from tests.daemon.harness import Daemon
from tests.kit.nodes import loopback_node
from tests.peers import SCENARIOS, free_port, need, sipp

SERVICES = """
[tls]
verify_mode = "off"

[[services]]
type = "virtual_reception"
name = "Lobby"
aliases = ["reception"]

[[services]]
type = "vmr"
name = "Room 1234"
aliases = ["1234"]
target = "sip:room1234@127.0.0.1:5999"
"""
PLAY = """  <nop>
    <action>
      <exec play_pcap_audio="/usr/share/sip-tester/dtmf_2833_{key}.pcap"/>
    </action>
  </nop>
  <pause milliseconds="400"/>
"""


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Daemon]:
    daemon = Daemon(tmp_path, loopback_node() + SERVICES)
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.mark.peer
def test_keys_by_rfc4733_hand_the_caller_on_to_the_room(node: Daemon, tmp_path: Path) -> None:
    need("sipp")
    assert (SCENARIOS / "uac_reception.xml").exists()
    plays = "".join(PLAY.format(key={"#": "pound"}.get(k, k)) for k in "1234#")
    done = sipp(f"127.0.0.1:{node.udp}", "uac_reception.xml", "-s", "reception", "-m", "1",
                "-p", str(free_port()), "-mp", str(free_port()), timeout=30,
                workdir=str(tmp_path), fill={"@PLAYS@": plays, "@KEYS@": "1234#",
                                             "@REFER_TO@": "sip:1234@127\\.0\\.0\\.1&gt;"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    [ended] = node.events("call_ended")
    assert ended["reason"] == "reception: handed on to 1234: 200"


@pytest.mark.peer
def test_the_prompt_a_caller_hears_is_speech_in_its_codec(node: Daemon, tmp_path: Path) -> None:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.fail("ffmpeg missing: run scripts/install --test")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sip, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as media:
        sip.bind(("127.0.0.1", 0))
        media.bind(("127.0.0.1", 0))
        sip.settimeout(5)
        media.settimeout(2)
        port, media_port = sip.getsockname()[1], media.getsockname()[1]
        sdp = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
               f"m=audio {media_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
               "a=rtpmap:101 telephone-event/8000\r\n")
        sip.sendto((f"INVITE sip:reception@127.0.0.1 SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-rc1;rport\r\n"
                    "From: <sip:me@example.org>;tag=me\r\nTo: <sip:reception@127.0.0.1>\r\n"
                    "Call-ID: reception-1\r\nCSeq: 1 INVITE\r\n"
                    f"Contact: <sip:me@127.0.0.1:{port}>\r\nMax-Forwards: 70\r\n"
                    "Content-Type: application/sdp\r\n"
                    f"Content-Length: {len(sdp)}\r\n\r\n{sdp}").encode(),
                   ("127.0.0.1", node.udp))
        while True:
            answer = parse_message(sip.recv(65535))
            if isinstance(answer, Response) and answer.status >= 200:
                break
        assert answer.status == 200 and b"RTP/AVP 0 101" in answer.body
        packets = []
        try:
            while True:
                packets.append(media.recv(2048))
        except TimeoutError:
            pass  # the welcome and the request for a number are over
    assert len(packets) > 100  # several seconds of speech at 50 packets a second
    headers = [struct.unpack("!BBHII", p[:12]) for p in packets]
    assert all(h[1] & 0x7F == 0 for h in headers)
    steps = {(b[3] - a[3]) % 2**32 for a, b in itertools.pairwise(headers)}
    assert steps == {160}  # 20 ms of 8 kHz per packet, no gap
    audio = tmp_path / "prompt.ul"
    audio.write_bytes(b"".join(p[12:] for p in packets))
    decoded = subprocess.run([ffmpeg, "-hide_banner", "-f", "mulaw", "-ar", "8000", "-ac", "1",
                              "-i", str(audio), "-af", "volumedetect", "-f", "null", "-"],
                             capture_output=True, text=True, timeout=30)
    mean = re.search(r"mean_volume: (-?[\d.]+) dB", decoded.stderr)
    assert mean is not None, decoded.stderr[-1000:]
    assert float(mean.group(1)) > -45.0  # speech, not silence
