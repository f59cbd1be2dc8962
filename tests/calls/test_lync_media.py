"""A Lync-style call end to end on loopback: the caller (an aioice agent playing the Lync
client) sends a multipart offer with ICE candidates and SRTP keys; the gateway offers plain
RTP to the SIP side, answers Lync with its own candidates and key, terminates ICE, and the
relay carries SRTP from Lync as RTP to the SIP phone and back."""

from __future__ import annotations

import asyncio
import base64
import os

import aioice
import pytest

from gateway.sip.message import Request, Response, make_response
from gateway.sip.transaction import Peer
from ice.candidate import Candidate, parse_candidate
from ice.ports import PortAllocator
from sdp.parse import parse_sdp
from tests.calls.test_b2bua import FIRST, Harness, outbound, phone
from tests.media.test_relay import far_end, rtp
from tests.peers import free_port

LYNC = Peer("TLS", "127.0.0.1", 5061, connection=3)
BOUNDARY = "lyncboundary"


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6:
                        ["127.0.0.1"])


def lync_offer(agent: aioice.Connection, key: bytes) -> bytes:
    candidates = "".join(f"a={Candidate.from_aioice(c).attribute()}\r\n"
                         for c in agent.local_candidates)
    port = agent.local_candidates[0].port
    rfc5245 = (
        "v=0\r\no=- 0 1 IN IP4 127.0.0.1\r\ns=session\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/SAVP 9 0 101\r\n"
        f"a=ice-ufrag:{agent.local_username}\r\na=ice-pwd:{agent.local_password}\r\n"
        f"{candidates}a=rtcp-mux\r\n"
        f"a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{base64.b64encode(key).decode()}|2^31\r\n"
        "a=label:main-audio\r\na=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"
        "m=applicationsharing 5398 TCP/RTP/SAVP 127\r\na=rtpmap:127 x-data/90000\r\n")
    fallback = ("v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=session\r\nc=IN IP4 127.0.0.1\r\n"
                f"t=0 0\r\nm=audio {port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
    return (f"--{BOUNDARY}\r\nContent-Type: application/sdp\r\nContent-Disposition: session; "
            f"handling=optional; ms-proxy-2007fallback\r\n\r\n{fallback}\r\n"
            f"--{BOUNDARY}\r\nContent-Type: application/sdp\r\nContent-Disposition: session; "
            f"handling=optional\r\n\r\n{rfc5245}\r\n--{BOUNDARY}--\r\n").encode()


def invite(body: bytes) -> bytes:
    return (
        "INVITE sip:alice@gw.example.com SIP/2.0\r\n"
        "Via: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bK-lync1\r\n"
        "From: \"Bob\" <sip:bob@example.com>;tag=lync\r\nTo: <sip:alice@gw.example.com>\r\n"
        "Call-ID: lync-call-1\r\nCSeq: 1 INVITE\r\n"
        "Contact: <sip:bob@example.com;opaque=user:epid:x;gruu>\r\n"
        "Ms-Conversation-ID: AdWy9f3h1yF2cNbzQ8KyK3u7bD2a0Q==\r\nMax-Forwards: 70\r\n"
        f"Content-Type: multipart/alternative;boundary={BOUNDARY}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def test_lync_ice_and_srtp_to_a_plain_rtp_phone() -> None:
    base = free_port()
    ports = PortAllocator(base, base + 40)
    lync = aioice.Connection(ice_controlling=True, components=1, use_ipv6=False)
    await lync.gather_candidates()
    lync_key = os.urandom(30)
    phone_sock, phone_rx, phone_port = await phone()
    h = Harness([FIRST], ports=ports, address="127.0.0.1")
    h.feed(invite(lync_offer(lync, lync_key)), LYNC)
    for _ in range(30):
        await h.settle()
    out, peer = outbound(h.take(), "INVITE")
    sip_offer = parse_sdp(out.body)
    assert [m.media for m in sip_offer.media] == ["audio"]  # sharing is not relayed
    audio = sip_offer.media[0]
    assert audio.proto == "RTP/AVP" and audio.formats == ["9", "0", "101"]
    assert not audio.has("ice-ufrag") and not audio.has("crypto")
    sip_answer = (f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                  f"m=audio {phone_port} RTP/AVP 9\r\na=rtpmap:9 G722/8000\r\n").encode()
    h.feed(make_response(out, 200, to_tag="phone", headers=(("Contact", "<sip:p@127.0.0.1>"),),
                         body=sip_answer, content_type="application/sdp"), peer)
    sent = h.take()
    ok = next(m for m, p in sent if isinstance(m, Response) and m.status == 200 and p == LYNC)
    assert ok.headers.get("Content-Type") == "application/sdp"
    answer = parse_sdp(ok.body)
    ours, sharing = answer.media
    assert sharing.rejected and ours.proto == "RTP/SAVP" and ours.formats == ["9"]
    our_key = base64.b64decode(ours.cryptos()[0].key)

    lync.remote_username = ours.attribute("ice-ufrag")
    lync.remote_password = ours.attribute("ice-pwd")
    for value in ours.attributes("candidate"):
        await lync.add_remote_candidate(parse_candidate(value).to_aioice())
    await lync.add_remote_candidate(None)
    await asyncio.wait_for(lync.connect(), 10)
    for _ in range(40):  # the gateway's side of ICE completes and the relay joins
        await asyncio.sleep(0.02)
        if any(c.lync and c.lync.media for c in h.b2bua.calls.values()):
            break

    tx, rx = far_end(lync_key, True), far_end(our_key, False)
    await lync.send(tx.protect(rtp(1, pt=9, ssrc=42)))
    assert await asyncio.wait_for(phone_rx.got.get(), 5) == rtp(1, pt=9, ssrc=42)
    [call] = h.b2bua.calls.values()
    assert call.lync is not None and call.lync.relay is not None
    sip_port = call.lync.sip_ports[0]
    phone_sock.sendto(rtp(2, pt=9, ssrc=77), ("127.0.0.1", sip_port))
    assert rx.unprotect(await asyncio.wait_for(lync.recv(), 5)) == rtp(2, pt=9, ssrc=77)
    assert h.b2bua.ice_outcomes == {"connected": 1}

    bye = (f"BYE sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bK-lb\r\n"
           f"From: \"Bob\" <sip:bob@example.com>;tag=lync\r\nTo: <sip:alice@gw.example.com>;"
           f"tag={ok.to.tag}\r\nCall-ID: lync-call-1\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\n"
           "Content-Length: 0\r\n\r\n").encode()
    h.feed(bye, LYNC)
    for _ in range(10):
        await h.settle()
    assert ports.in_use == set()  # ICE and SIP-side ports all back
    assert isinstance(outbound(h.take(), "BYE")[0], Request)
    await lync.close()
    phone_sock.close()
