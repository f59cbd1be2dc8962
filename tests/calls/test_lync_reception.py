"""A Lync caller at the Virtual Reception: the node terminates its ICE and SRTP (an aioice
agent plays the Lync client on loopback, libsrtp is each far end's crypto), plays the prompt
over SRTP in a codec Lync offered, reads Lync's keypad (RFC 4733 events under SRTP) and hands
the call on by REFER; Lync's application sharing is refused in the answer. A Lync caller
that refuses the REFER is handed on by a leg of ours: the room gets the INVITE, Lync's ICE
session and SRTP stay, and its audio reaches the room's socket decrypted and back, with no
re-INVITE toward Lync when the room keeps Lync's codec, and one narrowed to the room's codec
(same ICE credentials and key, Lync's new key taken) when it does not."""

from __future__ import annotations

import asyncio
import base64
import os
from dataclasses import dataclass
from pathlib import Path

import aioice
import pytest

from gateway.calls.lync_reception import LyncReception
from gateway.config.load import parse_text
from gateway.resolver.rfc3263 import Target
from gateway.sip.message import Request, Response, make_response
from ice.candidate import parse_candidate
from ice.ports import PortAllocator
from routing.engine import Router
from sdp.model import Media
from sdp.parse import parse_sdp
from tests.kit.calls import Harness, far, phone
from tests.kit.lync import LYNC, LyncStream, invite, lync_offer
from tests.kit.media import far_end, rtp
from tests.kit.reception import event, services, short_theme
from tests.peers import free_port

# The room's MCU: its signalling is what the harness captures, its media a real socket.
ROOM = Target("UDP", "mcu.example.com", "127.0.0.1", 5999)


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6:
                        ["127.0.0.1"])


@dataclass
class AtReception:
    """A Lync caller the reception answered, ICE up: its agent, its key, our answer's audio
    and the call's To tag."""

    h: Harness
    lync: aioice.Connection
    key: bytes
    audio: Media
    tag: str


async def at_reception(tmp_path: Path, targets: list[Target] | None = None) -> AtReception:
    # 40 ms prompts: the flow, not the speech, is under test
    theme = short_theme(tmp_path, b"\x55" * 320)
    config = parse_text(services(theme), "t.toml", base_dir=None)
    base = free_port()
    ports = PortAllocator(base, base + 40)
    h = Harness(targets, ports=ports, address="127.0.0.1")
    h.configure(router=Router(config.services, config.routing_rules))
    lync = aioice.Connection(ice_controlling=True, components=1, use_ipv6=False)
    await lync.gather_candidates()
    lync_key = os.urandom(30)
    h.feed(invite(lync_offer(lync, lync_key)).replace(b"alice@gw.example.com",
                                                      b"reception@127.0.0.1"), LYNC)
    for _ in range(30):
        await h.settle()
    ok = next(m for m, _ in h.take() if isinstance(m, Response) and m.status == 200)
    audio, sharing = parse_sdp(ok.body).media
    assert sharing.rejected and audio.proto == "RTP/SAVP" and "9" in audio.formats
    lync.remote_username = audio.attribute("ice-ufrag")
    lync.remote_password = audio.attribute("ice-pwd")
    for value in audio.attributes("candidate"):
        await lync.add_remote_candidate(parse_candidate(value).to_aioice())
    await lync.add_remote_candidate(None)
    await asyncio.wait_for(lync.connect(), 10)
    assert ok.to.tag
    return AtReception(h, lync, lync_key, audio, ok.to.tag)


async def keyed(lync: aioice.Connection, key: bytes, keys: tuple[int, ...]) -> None:
    """Lync's keypad: each key an RFC 4733 event under SRTP (11 is '#')."""
    tx = far_end(key, True)
    seq = 0
    for n, digit in enumerate(keys):
        for end in (False, True, True, True):  # the end sent three times, as RFC 4733 says
            seq += 1
            await lync.send(tx.protect(event(digit, seq, 8000 * (n + 1), end)))


async def next_request(h: Harness, method: str) -> Request:
    for _ in range(150):
        found = next((m for m, _ in h.take() if isinstance(m, Request)
                      and m.method == method), None)
        if found is not None:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"no {method}")


async def test_a_lync_caller_hears_the_prompt_keys_a_room_and_is_handed_on(
        tmp_path: Path) -> None:
    at = await at_reception(tmp_path)
    h, lync = at.h, at.lync
    rx = far_end(base64.b64decode(at.audio.cryptos()[0].key), False)
    prompt = rx.unprotect(await asyncio.wait_for(lync.recv(), 5))
    assert prompt[1] & 0x7F == 9 and prompt[12:] == b"\x55" * 160  # G.722, as Lync offered
    await keyed(lync, at.key, (1, 2, 3, 4, 11))
    refer = await next_request(h, "REFER")
    assert refer.headers.get("Refer-To") == "<sip:1234@127.0.0.1>"
    [call] = h.b2bua.calls.values()
    assert h.b2bua.statistics().ice == {"connected": 1, "failed": 0}
    await lync.close()
    close = call.media.close()
    if close is not None:
        await close


def room_answers(invite: Request, port: int, formats: str, rtpmaps: str) -> Response:
    """The room's 200: plain RTP on `port`, the codecs it took of our offer."""
    body = (f"v=0\r\no=- 7 7 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP {formats}\r\n{rtpmaps}"
            "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n").encode()
    return make_response(invite, 200, to_tag="room", headers=(
        ("Contact", "<sip:room@127.0.0.1:5999>"),), body=body, content_type="application/sdp")


def from_lync(method: str, cseq: int, tag: str, body: bytes = b"") -> bytes:
    """A request of Lync's in the reception's call."""
    return (f"{method} sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5061;"
            f"branch=z9hG4bK-lync{cseq}\r\nFrom: <sip:bob@example.com>;tag=lync\r\n"
            f"To: <sip:reception@127.0.0.1>;tag={tag}\r\nCall-ID: lync-call-1\r\n"
            f"CSeq: {cseq} {method}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


async def heard(got: list[bytes], payload: bytes) -> bytes:
    """The first packet in `got` (as it fills) that carries `payload` (prompts left over
    from before the hand-on are passed by)."""
    for _ in range(150):
        found = next((p for p in got if p[12:] == payload), None)
        if found is not None:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"nothing carrying {payload[:4]!r}... among {len(got)} packets")


async def handed_on(at: AtReception, formats: str, rtpmaps: str
                    ) -> tuple[Request, asyncio.DatagramTransport, list[bytes]]:
    """Lync keys 1234#, refuses our REFER, and the room (its own socket) answers our INVITE
    with `formats`: the INVITE, the room's socket and what it gets."""
    h = at.h
    room_rtp, room_media, room_port = await phone()
    await keyed(at.lync, at.key, (1, 2, 3, 4, 11))
    refer = await next_request(h, "REFER")
    h.feed(make_response(refer, 405), LYNC)
    placed = await next_request(h, "INVITE")
    assert placed.uri_text == "sip:room1234@mcu.example.com"
    offered = parse_sdp(placed.body).media[0]
    # What Lync may send, as our answer numbered it, over plain RTP.
    assert offered.proto == "RTP/AVP" and offered.formats == at.audio.formats
    h.feed(room_answers(placed, room_port, formats, rtpmaps), far(ROOM))
    await h.settle()
    got: list[bytes] = []

    async def gather() -> None:
        while True:
            got.append(await room_media.got.get())

    h.spawn(gather())
    return placed, room_rtp, got


async def test_a_lync_caller_refusing_refer_reaches_the_room_by_a_leg_of_ours(
        tmp_path: Path) -> None:
    """The room keeps G.722: Lync's description does not change, so no re-INVITE; the
    relay between Lync's ICE and SRTP and the room's plain RTP carries audio both ways;
    Lync's BYE reaches the room, every port is freed, one CDR names the room."""
    at = await at_reception(tmp_path, [ROOM])
    h = at.h
    ports = h.b2bua.ctx.ports
    assert ports is not None
    placed, room_rtp, got = await handed_on(at, "9 101", "a=rtpmap:9 G722/8000\r\n")
    sent = h.take()
    assert any(isinstance(m, Request) and m.method == "ACK" and p == far(ROOM)
               for m, p in sent)
    assert not any(isinstance(m, Request) and p == LYNC for m, p in sent)  # no re-INVITE
    [call] = h.b2bua.calls.values()
    assert call.reception is None and not call.handing_on
    lync = LyncStream(at.lync, at.key, at.audio)
    await lync.send(rtp(1, pt=9))
    assert (await heard(got, b"\xaa" * 160))[1] & 0x7F == 9  # decrypted, G.722
    relay = parse_sdp(placed.body).media[0].port
    room_rtp.sendto(rtp(1, pt=9, ssrc=0x5151, payload=b"\x33" * 160), ("127.0.0.1", relay))
    assert (await heard(lync.rtp, b"\x33" * 160))[1] & 0x7F == 9
    h.feed(from_lync("BYE", 3, at.tag), LYNC)
    await h.settle()
    assert any(isinstance(m, Request) and m.method == "BYE" for m, p in h.take()
               if p == far(ROOM))
    for _ in range(20):
        await h.settle()
    assert h.b2bua.calls == {} and not ports.in_use
    record = call.record
    assert (record.service, record.destination, record.out_call_id) == (
        "Lobby", "sip:room1234@mcu.example.com", placed.call_id)
    assert record.media is not None and record.media["audio"]["lync->sip"]["packets"] >= 1
    room_rtp.close()
    await lync.close()
    for task in h.tasks:
        task.cancel()


async def test_a_room_taking_another_codec_gets_lync_a_narrowed_reinvite(
        tmp_path: Path) -> None:
    """The room takes PCMU only: Lync is re-INVITEd with our description narrowed to it,
    the next version of the same session (same ICE credentials, candidates and key), and
    the key Lync's answer brings is the one its packets are then read with."""
    at = await at_reception(tmp_path, [ROOM])
    h = at.h
    placed, room_rtp, got = await handed_on(at, "0 101", "a=rtpmap:0 PCMU/8000\r\n")
    [reinvite] = [m for m, p in h.take() if isinstance(m, Request) and m.method == "INVITE"
                  and p == LYNC]
    narrowed = parse_sdp(reinvite.body)
    audio = narrowed.media[0]
    assert audio.formats == ["0", "101"] and narrowed.media[1].rejected
    assert (audio.attribute("ice-ufrag"), audio.attribute("ice-pwd"), audio.cryptos(),
            audio.attributes("candidate")) == (
        at.audio.attribute("ice-ufrag"), at.audio.attribute("ice-pwd"), at.audio.cryptos(),
        at.audio.attributes("candidate"))
    assert narrowed.origin[:3] == ["-", "0", "1"]  # the reception's session, next version
    new_key = os.urandom(30)
    tag = at.audio.cryptos()[0].tag
    answer = (f"v=0\r\no=- 0 2 IN IP4 127.0.0.1\r\ns=session\r\nc=IN IP4 127.0.0.1\r\n"
              f"t=0 0\r\nm=audio {at.lync.local_candidates[0].port} RTP/SAVP 0 101\r\n"
              f"a=rtcp-mux\r\na=crypto:{tag} AES_CM_128_HMAC_SHA1_80 inline:"
              f"{base64.b64encode(new_key).decode()}|2^31\r\na=rtpmap:0 PCMU/8000\r\n"
              "a=rtpmap:101 telephone-event/8000\r\nm=applicationsharing 0 TCP/RTP/SAVP 127\r\n"
              ).encode()
    h.feed(make_response(reinvite, 200, headers=(("Contact", "<sip:bob@127.0.0.1>"),),
                         body=answer, content_type="application/sdp"), LYNC)
    await h.settle()
    assert any(isinstance(m, Request) and m.method == "ACK" for m, p in h.take()
               if p == LYNC)
    lync = LyncStream(at.lync, new_key, at.audio)
    await lync.send(rtp(1, pt=0))
    assert (await heard(got, b"\xaa" * 160))[1] & 0x7F == 0  # read with Lync's new key
    relay = parse_sdp(placed.body).media[0].port
    room_rtp.sendto(rtp(1, pt=0, ssrc=0x5151, payload=b"\x33" * 160), ("127.0.0.1", relay))
    assert (await heard(lync.rtp, b"\x33" * 160))[1] & 0x7F == 0  # still with our key
    [call] = h.b2bua.calls.values()
    assert not isinstance(call.media, LyncReception) and call.pending is None
    room_rtp.close()
    await lync.close()
    for task in h.tasks:
        task.cancel()
    close = call.media.close()
    if close is not None:
        await close
