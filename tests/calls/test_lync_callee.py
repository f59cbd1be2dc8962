"""A call from a plain SIP phone toward a Lync client, end to end on loopback: the gateway
offers ICE and SRTP to "Lync" (an aioice agent), answers the phone with plain RTP on relay
ports, runs ICE as the controlling agent, sends the second INVITE with a=remote-candidates,
ACKs its answer, and relays RTP <-> SRTP; the From toward Lync is in the gateway's domain."""

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
from tests.calls.test_b2bua import FIRST, Harness, outbound, phone, sdp_body
from tests.media.test_relay import far_end, rtp
from tests.peers import free_port

PHONE = Peer("UDP", "127.0.0.1", 5062)
RULES = """
[[routing_rules]]
name = "SIP to Lync"
priority = 10
protocols = ["sip"]
match = '(.+)@gw\\.example\\.com'
replace = '\\1@lync.example.com'
outgoing_protocol = "mssip"
"""


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6:
                        ["127.0.0.1"])


async def test_sip_phone_calls_a_lync_client_through_ice_and_srtp() -> None:
    base = free_port()
    ports = PortAllocator(base, base + 40)
    phone_sock, phone_rx, phone_port = await phone()
    h = Harness([FIRST], ports=ports, address="127.0.0.1", rules=RULES)
    h.b2bua.mssip_domain = {"": "vc.example.com"}.__getitem__  # automatic: the ingress location
    body = sdp_body(phone_port)
    h.feed((f"INVITE sip:alice@gw.example.com SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK-p1;rport\r\n"
            "From: \"Room 12\" <sip:room12@10.0.0.7>;tag=phone\r\n"
            "To: <sip:alice@gw.example.com>\r\nCall-ID: to-lync-1\r\nCSeq: 1 INVITE\r\n"
            "Contact: <sip:room12@127.0.0.1:5062>\r\nMax-Forwards: 70\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body, PHONE)
    for _ in range(30):
        await h.settle()
    out, lync_peer = outbound(h.take(), "INVITE")
    assert out.uri_text == "sip:alice@lync.example.com"
    assert str(out.from_.uri) == "sip:room12@vc.example.com"  # the gateway's domain
    offer = parse_sdp(out.body)
    audio = offer.media[0]
    assert audio.proto == "RTP/SAVP" and audio.has("ice-ufrag") and audio.has("rtcp-mux")
    assert audio.formats == ["9"] and audio.cryptos()

    # "Lync" answers: its own ICE agent and key.
    lync = aioice.Connection(ice_controlling=False, components=1, use_ipv6=False)
    await lync.gather_candidates()
    lync_key = os.urandom(30)
    candidates = "".join(f"a={Candidate.from_aioice(c).attribute()}\r\n"
                         for c in lync.local_candidates)
    answer = (f"v=0\r\no=- 0 1 IN IP4 127.0.0.1\r\ns=session\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
              f"m=audio {lync.local_candidates[0].port} RTP/SAVP 9\r\n"
              f"a=ice-ufrag:{lync.local_username}\r\na=ice-pwd:{lync.local_password}\r\n"
              f"{candidates}a=rtcp-mux\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"
              f"{base64.b64encode(lync_key).decode()}|2^31\r\na=rtpmap:9 G722/8000\r\n")
    h.feed(make_response(out, 200, to_tag="lync", body=answer.encode(),
                         headers=(("Contact", "<sip:alice@127.0.0.1;transport=tls>"),),
                         content_type="application/sdp"), lync_peer)
    sent = h.take()
    ok = next(m for m, p in sent if isinstance(m, Response) and m.status == 200)
    to_phone = parse_sdp(ok.body).media[0]
    assert to_phone.proto == "RTP/AVP" and not to_phone.has("crypto")
    relay_port = to_phone.port
    assert outbound(sent, "ACK")[1] == lync_peer

    lync.remote_username = audio.attribute("ice-ufrag")
    lync.remote_password = audio.attribute("ice-pwd")
    for value in audio.attributes("candidate"):
        await lync.add_remote_candidate(parse_candidate(value).to_aioice())
    await lync.add_remote_candidate(None)
    await asyncio.wait_for(lync.connect(), 10)
    second: Request | None = None
    for _ in range(100):
        await asyncio.sleep(0.02)
        invites = [m for m, _ in h.take() if isinstance(m, Request) and m.method == "INVITE"]
        if invites:
            second = invites[0]
            break
    assert second is not None and second.to.tag == "lync" and second.cseq.seq == 2
    assert parse_sdp(second.body).media[0].attribute("remote-candidates")
    h.feed(make_response(second, 200, body=answer.encode(), content_type="application/sdp"),
           lync_peer)
    ack = [m for m, _ in h.take() if isinstance(m, Request) and m.method == "ACK"]
    assert ack and ack[0].cseq.seq == 2

    our_key = base64.b64decode(audio.cryptos()[0].key)
    tx, rx = far_end(lync_key, True), far_end(our_key, False)
    phone_sock.sendto(rtp(1, pt=9, ssrc=5), ("127.0.0.1", relay_port))
    assert rx.unprotect(await asyncio.wait_for(lync.recv(), 5)) == rtp(1, pt=9, ssrc=5)
    await lync.send(tx.protect(rtp(2, pt=9, ssrc=6)))
    assert await asyncio.wait_for(phone_rx.got.get(), 5) == rtp(2, pt=9, ssrc=6)
    await lync.close()
    phone_sock.close()
