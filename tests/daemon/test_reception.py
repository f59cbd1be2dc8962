"""The Virtual Reception against a running daemon, as callers reach it: SIPp keys a room's
number with its own RFC 4733 captures and is handed on by REFER to that room; a SIPp caller
that takes no REFER, keying by RFC 4733 or by SIP INFO (both bodies), reaches the room (a
SIPp UAS, which sees the INVITE for the room's target) by the node's own leg and is
re-INVITEd onto it; the prompt a caller hears is speech (ffmpeg decodes it), sent with the
codec's RTP timing; a Lync caller over mutual TLS (stunnel presents the pool's certificate)
hears it over ICE and SRTP (an aioice agent and libsrtp play Lync's end)."""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import re
import shutil
import socket
import struct
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aioice
import pytest

from gateway.media.prompts import TEXTS
from gateway.sip.message import Response
from gateway.sip.parse import parse_message
from ice.candidate import parse_candidate
from sdp.parse import parse_sdp
from tests.daemon.harness import Daemon
from tests.kit.audio import assert_speech, decode
from tests.kit.lync import invite, lync_offer
from tests.kit.media import far_end
from tests.kit.nodes import loopback_node, with_pki, write_pki
from tests.peers import SCENARIOS, free_port, need, sipp, stunnel

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
target = "sip:room1234@127.0.0.1:{room}"
"""
PLAY = """  <nop>
    <action>
      <exec play_pcap_audio="/usr/share/sip-tester/dtmf_2833_{key}.pcap"/>
    </action>
  </nop>
  <pause milliseconds="400"/>
"""
# One key by SIP INFO, in either of the bodies the node reads; CSeq from 2 on.
INFO = """  <send>
    <![CDATA[
      INFO [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: {cseq} INFO
      Max-Forwards: 70
      Content-Type: {content_type}
      Content-Length: [len]

      {body}
    ]]>
  </send>
  <recv response="200"/>
"""
# The room answers the caller's PCMA (the scenario answers G.722 as written).
PCMA_ROOM = {"RTP/AVP 9\n": "RTP/AVP 8\n", "a=rtpmap:9 G722/8000": "a=rtpmap:8 PCMA/8000"}


def rfc4733(keys: str) -> str:
    return "".join(PLAY.format(key={"#": "pound"}.get(k, k)) for k in keys)


def sip_info(keys: str) -> str:
    """`keys` by INFO, alternately `application/dtmf-relay` and `application/dtmf`."""
    return "".join(INFO.format(
        cseq=n, content_type="application/dtmf-relay" if n % 2 else "application/dtmf",
        body=f"Signal={key}\n      Duration=160" if n % 2 else key)
        for n, key in enumerate(keys, 2))


@pytest.fixture
def room() -> int:
    return free_port()


@pytest.fixture
def node(tmp_path: Path, room: int) -> Iterator[Daemon]:
    daemon = Daemon(tmp_path, loopback_node() + SERVICES.format(room=room))
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.mark.peer
def test_keys_by_rfc4733_hand_the_caller_on_to_the_room(node: Daemon, tmp_path: Path) -> None:
    need("sipp")
    assert (SCENARIOS / "uac_reception.xml").exists()
    done = sipp(f"127.0.0.1:{node.udp}", "uac_reception.xml", "-s", "reception", "-m", "1",
                "-p", str(free_port()), "-mp", str(free_port()), timeout=30,
                workdir=str(tmp_path), fill={"@PLAYS@": rfc4733("1234#"), "@KEYS@": "1234#",
                                             "@REFER_TO@": "sip:1234@127\\.0\\.0\\.1&gt;"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    [ended] = node.events("call_ended")
    assert ended["reason"] == "reception: handed on to 1234: 200"


@pytest.mark.peer
@pytest.mark.parametrize("keyed", [rfc4733, sip_info], ids=["rfc4733", "sip-info"])
def test_a_caller_without_refer_reaches_the_room_by_the_nodes_own_leg(
        keyed: Callable[[str], str], node: Daemon, room: int, tmp_path: Path) -> None:
    need("sipp")
    trace = tmp_path / "room-messages.log"
    with ThreadPoolExecutor(1) as pool:
        answered = pool.submit(sipp, "127.0.0.1", "uas_rr.xml", "-m", "1", "-p", str(room),
                               "-mp", str(free_port()), "-trace_msg", "-message_file",
                               str(trace), timeout=20, workdir=str(tmp_path), fill=PCMA_ROOM)
        done = sipp(f"127.0.0.1:{node.udp}", "uac_reception_leg.xml", "-s", "reception",
                    "-m", "1", "-p", str(free_port()), "-mp", str(free_port()), timeout=30,
                    workdir=str(tmp_path), fill={"@PLAYS@": keyed("1234#")})
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
        room_done = answered.result()
    assert room_done.returncode == 0, room_done.stdout[-3000:] + trace.read_text()[-3000:]
    invites = [m for m in trace.read_text().split("\n\n") if m.lstrip().startswith("INVITE ")]
    assert invites and invites[0].lstrip().startswith(
        f"INVITE sip:room1234@127.0.0.1:{room} SIP/2.0"), trace.read_text()[-3000:]
    [handed] = node.events("reception_handed_on")
    assert handed["by"] == "leg" and handed["to"] == f"sip:room1234@127.0.0.1:{room}"
    [ended] = node.wait_event("call_ended")
    assert ended["reason"] == "BYE from the caller"


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


@pytest.fixture
def mutual_tls(tmp_path: Path, room: int) -> Iterator[Daemon]:
    """The node requiring a client certificate from its CA, as it does of Lync's pools."""
    write_pki(tmp_path)
    text = with_pki(loopback_node() + SERVICES.format(room=room), tmp_path, verify=True)
    daemon = Daemon(tmp_path, text)
    try:
        yield daemon
    finally:
        daemon.stop()


async def sip_message(reader: asyncio.StreamReader) -> bytes:
    """One message off a stream: its head, then Content-Length bytes of body."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = re.search(rb"\r\nContent-Length: *(\d+)", head, re.I)
    return head + (await reader.readexactly(int(length.group(1))) if length else b"")


@pytest.mark.peer
async def test_a_lync_caller_over_mutual_tls_hears_the_prompt_over_ice_and_srtp(
        mutual_tls: Daemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6:
                        ["127.0.0.1"])
    accept = free_port()
    lync = aioice.Connection(ice_controlling=True, components=1, use_ipv6=False)
    with stunnel(tmp_path, accept=accept, connect=mutual_tls.tls, cert=tmp_path / "lync.pem",
                 check_host="gw.example.com"):
        reader, writer = await asyncio.open_connection("127.0.0.1", accept)
        await lync.gather_candidates()
        lync_key = os.urandom(30)
        writer.write(invite(lync_offer(lync, lync_key)).replace(b"alice@gw.example.com",
                                                                b"reception@127.0.0.1"))
        while True:
            ok = parse_message(await asyncio.wait_for(sip_message(reader), 10))
            if isinstance(ok, Response) and ok.status >= 200:
                break
        assert ok.status == 200, ok.reason
        writer.write((
            "ACK sip:reception@127.0.0.1 SIP/2.0\r\n"
            "Via: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bK-lync-ack\r\n"
            f"From: {ok.headers.get('From')}\r\nTo: {ok.headers.get('To')}\r\n"
            f"Call-ID: {ok.call_id}\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n").encode())
        audio = parse_sdp(ok.body).media[0]
        assert audio.proto == "RTP/SAVP" and audio.formats[0] == "9"  # G.722, as offered
        lync.remote_username = audio.attribute("ice-ufrag")
        lync.remote_password = audio.attribute("ice-pwd")
        for value in audio.attributes("candidate"):
            await lync.add_remote_candidate(parse_candidate(value).to_aioice())
        await lync.add_remote_candidate(None)
        await asyncio.wait_for(lync.connect(), 10)
        ours = far_end(base64.b64decode(audio.cryptos()[0].key), False)
        packets = []
        try:
            while True:  # the welcome and the request for a number, then silence
                packets.append(ours.unprotect(await asyncio.wait_for(lync.recv(), 1.5)))
        except TimeoutError:
            pass
        await lync.close()
        writer.close()
    headers = [struct.unpack("!BBHII", p[:12]) for p in packets]
    assert {h[1] & 0x7F for h in headers} == {9}
    assert {(b[3] - a[3]) % 2**32 for a, b in itertools.pairwise(headers)} == {160}
    samples, rate = decode(b"".join(p[12:] for p in packets), "G722")
    assert_speech(samples, rate, f"{TEXTS['welcome']} {TEXTS['enter_number']}")
    assert mutual_tls.events("tls_accepted")[0]["client_cert"] is True
    assert not [e for e in mutual_tls.events() if e.get("level") in ("error", "critical")]
