"""A call from a plain SIP phone toward a Lync client, end to end on loopback: the gateway
offers ICE and SRTP to "Lync" (an aioice agent), answers the phone with plain RTP on relay
ports, runs ICE as the controlling agent, sends the second INVITE with a=remote-candidates,
ACKs its answer, and relays RTP <-> SRTP, renumbering payload types Lync numbered
differently and sending RTCP where the phone's a=rtcp says; the From toward Lync is in the
gateway's domain. Also: the rule's bandwidth cap and STUN server reach both SDPs, streams
gather side by side, a call that ends while gathering gives every port back, and a room
system's H264 and Lync's X-H264UC cross the whole call frame for frame both ways, and
video removed mid-call by either leg stops on both."""

from __future__ import annotations

import asyncio
import base64
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aioice
import pytest

from gateway.calls.call import Call
from gateway.calls.cdr import CdrStore
from gateway.calls.lync_callee import LyncCallee
from gateway.media.video_plan import SipVideoLimits, VideoPlan
from gateway.sip.message import Request, Response, make_response
from gateway.transport.peer import Peer
from ice.candidate import Candidate, parse_candidate
from ice.ports import PortAllocator
from sdp.model import Media, SessionDescription
from sdp.parse import parse_sdp
from sdp.sdes import Encryption
from tests.kit.calls import (
    FIRST,
    Harness,
    answered_back,
    in_dialog,
    leg,
    our_reinvite,
    outbound,
    phone,
    reoffered,
    sdp_body,
    statuses,
    video_crosses,
    video_relayed,
    without_video,
)
from tests.kit.lync import LyncStream, StunServer, audio_answer
from tests.kit.media import crypto, far_end, rtcp_sr, rtp
from tests.kit.video import frames, lync_frames, lync_packets, paced, source_video
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


def phone_invite(body: bytes) -> bytes:
    return (f"INVITE sip:alice@gw.example.com SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK-p1;rport\r\n"
            "From: \"Room 12\" <sip:room12@10.0.0.7>;tag=phone\r\n"
            "To: <sip:alice@gw.example.com>\r\nCall-ID: to-lync-1\r\nCSeq: 1 INVITE\r\n"
            "Contact: <sip:room12@127.0.0.1:5062>\r\nMax-Forwards: 70\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body


@pytest.mark.parametrize("event_pt", [101, 96])
async def test_sip_phone_calls_a_lync_client_through_ice_and_srtp(event_pt: int) -> None:
    """Media both ways; with Lync numbering telephone-event 96 where the phone has 101, each
    side gets events in its own numbering whichever of the two the other sends with."""
    base = free_port()
    ports = PortAllocator(base, base + 40)
    phone_sock, phone_rx, phone_port = await phone()
    rtcp_sock, rtcp_rx, rtcp_port = await phone()
    h = Harness([FIRST], ports=ports, address="127.0.0.1", rules=RULES)
    h.configure(mssip_domain_default="vc.example.com")  # no override for the location
    body = sdp_body(phone_port).replace(b"RTP/AVP 9\r\n", b"RTP/AVP 9 101\r\na=rtcp:%d\r\n"
                                        b"a=rtpmap:101 telephone-event/8000\r\n" % rtcp_port)
    h.feed(phone_invite(body), PHONE)
    for _ in range(30):
        await h.settle()
    out, lync_peer = outbound(h.take(), "INVITE")
    assert out.uri_text == "sip:alice@lync.example.com"
    assert str(out.from_.uri) == "sip:room12@vc.example.com"  # the gateway's domain
    offer = parse_sdp(out.body)
    audio = offer.media[0]
    assert audio.proto == "RTP/SAVP" and audio.has("ice-ufrag") and audio.has("rtcp-mux")
    assert audio.formats == ["9", "101"] and audio.cryptos()

    # "Lync" answers: its own ICE agent and key.
    lync = aioice.Connection(ice_controlling=False, components=1, use_ipv6=False)
    await lync.gather_candidates()
    lync_key = os.urandom(30)
    answer = audio_answer(lync, lync_key, f"9 {event_pt}", "a=rtpmap:9 G722/8000\r\n"
                          f"a=rtpmap:{event_pt} telephone-event/8000\r\n").decode()
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
    for seq, pt in ((3, event_pt), (4, 101)):  # as we answered it, and as it numbers it
        phone_sock.sendto(rtp(seq, pt=pt, ssrc=5), ("127.0.0.1", relay_port))
        assert rx.unprotect(await asyncio.wait_for(lync.recv(), 5)) == rtp(seq, pt=event_pt,
                                                                            ssrc=5)
    for seq, pt in ((5, 101), (6, event_pt)):  # as we offered it, and as Lync numbers it
        await lync.send(tx.protect(rtp(seq, pt=pt, ssrc=6)))
        assert await asyncio.wait_for(phone_rx.got.get(), 5) == rtp(seq, pt=101, ssrc=6)
    await lync.send(tx.protect_rtcp(rtcp_sr(6)))
    assert await asyncio.wait_for(rtcp_rx.got.get(), 5) == rtcp_sr(6)  # to its a=rtcp
    await lync.close()
    phone_sock.close()
    rtcp_sock.close()


async def test_the_rules_bandwidth_cap_and_stun_server_reach_both_sides() -> None:
    """Lync's offer carries the rule's cap (b=AS/b=TIAS, and x-mediabw, which Lync reads)
    and a server-reflexive candidate from the STUN server the rule names; the phone's answer
    asks for no more than the cap either."""
    stun_transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        StunServer, local_addr=("127.0.0.1", 0))
    stun_at = ("127.0.0.1", int(stun_transport.get_extra_info("sockname")[1]))
    base = free_port()
    ports = PortAllocator(base, base + 40)
    rules = RULES.replace('outgoing_protocol', 'stun_server = "edge-stun"\n'
                          'max_bandwidth_kbps = 256\noutgoing_protocol')
    rules += '[[stun_servers]]\nname = "edge-stun"\naddress = "127.0.0.1"\nport = 3478\n'
    h = Harness([FIRST], ports=ports, address="127.0.0.1", rules=rules)
    h.configure(stun_servers={"edge-stun": stun_at})  # where the test's server listens
    h.feed(phone_invite(sdp_body(5004)), PHONE)
    for _ in range(30):
        await h.settle()
    out, lync_peer = outbound(h.take(), "INVITE")
    audio = parse_sdp(out.body).media[0]
    assert (audio.bandwidth("AS"), audio.bandwidth("TIAS")) == (256, 256000)
    assert audio.attribute("x-mediabw") == "main-audio send=256;recv=256"
    assert any(" typ srflx " in c for c in audio.attributes("candidate"))
    answer = (b"v=0\r\no=- 0 1 IN IP4 127.0.0.1\r\ns=session\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
              b"m=audio 5006 RTP/SAVP 9\r\na=ice-ufrag:abcd\r\na=ice-pwd:" + b"p" * 22 +
              b"\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + base64.b64encode(
                  os.urandom(30)) + b"|2^31\r\na=rtpmap:9 G722/8000\r\n")
    h.feed(make_response(out, 200, to_tag="lync", body=answer,
                         headers=(("Contact", "<sip:alice@127.0.0.1;transport=tls>"),),
                         content_type="application/sdp"), lync_peer)
    ok = next(m for m, _ in h.take() if isinstance(m, Response) and m.status == 200)
    to_phone = parse_sdp(ok.body).media[0]
    assert (to_phone.bandwidth("AS"), to_phone.bandwidth("TIAS")) == (256, 256000)
    [call] = h.b2bua.calls.values()
    assert isinstance(call.media, LyncCallee)
    await call.media.close()
    stun_transport.close()
    assert ports.in_use == set()


async def lync_client_answers(h: Harness, out: Request, lync_peer: Peer
                              ) -> tuple[aioice.Connection, bytes]:
    """"Lync" answers our offer with its ICE agent and key, and ICE completes; the relay
    has joined when this returns. (The agent, Lync's key.)"""
    lync = aioice.Connection(ice_controlling=False, components=1, use_ipv6=False)
    await lync.gather_candidates()
    lync_key = os.urandom(30)
    offered = parse_sdp(out.body).media[0]
    h.feed(make_response(out, 200, to_tag="lync", body=audio_answer(lync, lync_key),
                         headers=(("Contact", "<sip:alice@127.0.0.1;transport=tls>"),),
                         content_type="application/sdp"), lync_peer)
    lync.remote_username = offered.attribute("ice-ufrag")
    lync.remote_password = offered.attribute("ice-pwd")
    for value in offered.attributes("candidate"):
        await lync.add_remote_candidate(parse_candidate(value).to_aioice())
    await lync.add_remote_candidate(None)
    await asyncio.wait_for(lync.connect(), 10)
    for _ in range(100):
        if any(c.media.relayed for c in h.b2bua.calls.values()):
            return lync, lync_key
        await asyncio.sleep(0.02)
    raise AssertionError("the relay never joined")


F8 = "a=crypto:3 F8_128_HMAC_SHA1_80 inline:" + base64.b64encode(bytes(30)).decode() + "\r\n"


@pytest.mark.parametrize("encryption", ["best_effort", "required"])
async def test_a_phones_srtp_is_answered_with_our_key_and_relayed_to_lync(
        encryption: Encryption) -> None:
    """The phone offers RTP/SAVP with a suite we cannot use and one we can (tag 5): its
    answer is RTP/SAVP with one a=crypto, tag 5, our own key; SRTP and SRTCP from the phone
    reach Lync decrypted with the phone's key and protected with ours toward Lync, and
    Lync's come back protected with the key we gave the phone (libsrtp at both far ends)."""
    base = free_port()
    ports = PortAllocator(base, base + 40)
    phone_sock, phone_rx, phone_port = await phone()
    rtcp_sock, rtcp_rx, rtcp_port = await phone()
    h = Harness([FIRST], ports=ports, address="127.0.0.1", rules=RULES)
    h.configure(encryption=encryption)
    phone_crypto, phone_key = crypto(mki=False)
    body = sdp_body(phone_port).replace(
        b"RTP/AVP 9\r\n", b"RTP/SAVP 9\r\na=rtcp:%d\r\n%s%s\r\n" % (
            rtcp_port, F8.encode(), f"a=crypto:{replace(phone_crypto, tag=5)}".encode()))
    h.feed(phone_invite(body), PHONE)
    for _ in range(30):
        await h.settle()
    out, lync_peer = outbound(h.take(), "INVITE")
    to_lync = parse_sdp(out.body).media[0]
    assert to_lync.proto == "RTP/SAVP" and len(to_lync.cryptos()) == 1
    lync, lync_key = await lync_client_answers(h, out, lync_peer)
    ok = next(m for m, _ in h.take() if isinstance(m, Response) and m.status == 200)
    to_phone = parse_sdp(ok.body).media[0]
    [ours] = to_phone.cryptos()
    assert to_phone.proto == "RTP/SAVP" and (ours.tag, ours.suite) == (
        5, "AES_CM_128_HMAC_SHA1_80")
    our_sip_key = base64.b64decode(ours.key, validate=True)
    assert len(our_sip_key) == 30 and our_sip_key != phone_key
    our_lync_key = base64.b64decode(to_lync.cryptos()[0].key)
    assert our_lync_key != our_sip_key

    relay_port = to_phone.port
    phone_tx, phone_rx_srtp = far_end(phone_key, True), far_end(our_sip_key, False)
    lync_tx, lync_rx = far_end(lync_key, True), far_end(our_lync_key, False)
    phone_sock.sendto(phone_tx.protect(rtp(1, pt=9, ssrc=5)), ("127.0.0.1", relay_port))
    assert lync_rx.unprotect(await asyncio.wait_for(lync.recv(), 5)) == rtp(1, pt=9, ssrc=5)
    rtcp_sock.sendto(phone_tx.protect_rtcp(rtcp_sr(5)), ("127.0.0.1", relay_port + 1))
    assert lync_rx.unprotect_rtcp(await asyncio.wait_for(lync.recv(), 5)) == rtcp_sr(5)
    await lync.send(lync_tx.protect(rtp(2, pt=9, ssrc=6)))
    got = await asyncio.wait_for(phone_rx.got.get(), 5)
    assert got != rtp(2, pt=9, ssrc=6) and phone_rx_srtp.unprotect(got) == rtp(2, pt=9, ssrc=6)
    await lync.send(lync_tx.protect_rtcp(rtcp_sr(6)))
    assert phone_rx_srtp.unprotect_rtcp(await asyncio.wait_for(rtcp_rx.got.get(), 5)) == (
        rtcp_sr(6))
    [call] = h.b2bua.calls.values()
    assert isinstance(call.media, LyncCallee)
    await call.media.close()
    await lync.close()
    phone_sock.close()
    rtcp_sock.close()


async def test_a_phones_plain_offer_keeps_plain_rtp_when_encryption_is_off() -> None:
    """sip_media_encryption is the SIP leg's: "off" leaves the phone's key unused (its
    answer has none), while Lync still gets SRTP, which it requires."""
    base = free_port()
    ports = PortAllocator(base, base + 40)
    h = Harness([FIRST], ports=ports, address="127.0.0.1", rules=RULES)
    h.configure(encryption="off")
    phone_crypto, _ = crypto(mki=False)
    body = sdp_body(5004).replace(b"a=sendrecv", f"a=crypto:{phone_crypto}".encode())
    h.feed(phone_invite(body), PHONE)
    for _ in range(30):
        await h.settle()
    out, lync_peer = outbound(h.take(), "INVITE")
    to_lync = parse_sdp(out.body).media[0]
    assert to_lync.proto == "RTP/SAVP" and to_lync.cryptos()
    lync, _ = await lync_client_answers(h, out, lync_peer)
    ok = next(m for m, _ in h.take() if isinstance(m, Response) and m.status == 200)
    to_phone = parse_sdp(ok.body).media[0]
    assert to_phone.proto == "RTP/AVP" and not to_phone.has("crypto")
    [call] = h.b2bua.calls.values()
    assert isinstance(call.media, LyncCallee)
    await call.media.close()
    await lync.close()


@pytest.mark.parametrize(("encryption", "offer", "why"), [
    ("best_effort", b"RTP/SAVP 9\r\n" + F8.encode(), "has no suite we speak"),
    ("best_effort", b"RTP/SAVP 9\r\n", "has no suite we speak"),
    ("off", b"RTP/SAVP 9\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"
     + base64.b64encode(bytes(30)) + b"\r\n", "sip_media_encryption is off"),
    ("required", b"RTP/AVP 9\r\n", "SRTP is required"),
], ids=["unusable suite", "no key", "encryption off", "encryption required"])
async def test_an_offer_whose_srtp_cannot_be_answered_gets_488_saying_why(
        encryption: Encryption, offer: bytes, why: str) -> None:
    """Refused before anything is gathered or sent toward Lync: an RTP/SAVP offer cannot be
    answered RTP/AVP, nor SAVP without a key (RFC 3264 6.1, RFC 4568)."""
    base = free_port()
    ports = PortAllocator(base, base + 40)
    h = Harness([FIRST], ports=ports, address="127.0.0.1", rules=RULES)
    h.configure(encryption=encryption)
    h.feed(phone_invite(sdp_body(5004).replace(b"RTP/AVP 9\r\n", offer)), PHONE)
    await h.settle()
    sent = h.take()
    assert statuses(sent, PHONE) == [100, 488]
    refused = next(m for m, _ in sent if isinstance(m, Response) and m.status == 488)
    assert why in refused.reason
    assert not [m for m, _ in sent if isinstance(m, Request) and m.method == "INVITE"]
    assert not h.b2bua.calls and ports.in_use == set()


GROUP_VIDEO = (b"m=video %d RTP/AVP 109 110 34\r\nb=TIAS:1984000\r\na=rtpmap:109 H264/90000\r\n"
               b"a=fmtp:109 profile-level-id=42801f;packetization-mode=1;max-mbps=245000;"
               b"max-fs=8192\r\na=rtpmap:110 H264/90000\r\na=fmtp:110 profile-level-id=42801f"
               b"\r\na=rtpmap:34 H263/90000\r\n")
LYNC_SSRCS = (3933771608, 3933771707)


def lync_stream(agent: aioice.Connection, key: bytes, kind: str, codec: str) -> str:
    """One stream of Lync's answer as Lync 2013 writes it."""
    ssrcs = f"{LYNC_SSRCS[0]}-{LYNC_SSRCS[1]}" if kind == "video" else "3933771607-3933771607"
    feedback = "src,x-pli" if kind == "video" else "dsh"
    pt = codec.split(" ", 1)[0]
    candidates = "".join(f"a={Candidate.from_aioice(c).attribute()}\r\n"
                         for c in agent.local_candidates)
    return (f"m={kind} {agent.local_candidates[0].port} RTP/SAVP {pt}\r\n"
            f"a=x-ssrc-range:{ssrcs}\r\n"
            f"a=rtcp-fb:* x-message app send:{feedback} recv:{feedback}\r\na=rtcp-rsize\r\n"
            f"a=label:main-{kind}\r\na=x-source:main-{kind}\r\n"
            f"a=ice-ufrag:{agent.local_username}\r\na=ice-pwd:{agent.local_password}\r\n"
            f"{candidates}a=rtcp-mux\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"
            f"{base64.b64encode(key).decode()}|2^31\r\na=rtpmap:{codec}\r\n")


async def lync_answers_video(h: Harness, out: Request, lync_peer: Peer, camera_key: bytes,
                             session: str = "", *, camera_on: bool = True
                             ) -> tuple[aioice.Connection, aioice.Connection, Response, bytes]:
    """Lync 2013 answers our audio and X-H264UC offer (`session`: its session-level lines),
    each stream on an ICE agent of its own, video with `camera_key` (not `camera_on`: video
    rejected, port 0). (The agents, our 200 to the phone, Lync's answer.)"""
    lync, camera = (aioice.Connection(ice_controlling=False, components=1, use_ipv6=False)
                    for _ in range(2))
    await asyncio.gather(lync.gather_candidates(), camera.gather_candidates())
    answer = ("v=0\r\no=- 0 1 IN IP4 127.0.0.1\r\ns=session\r\nc=IN IP4 127.0.0.1\r\n"
              f"t=0 0\r\n{session}" + lync_stream(lync, os.urandom(30), "audio", "9 G722/8000")
              + (lync_stream(camera, camera_key, "video", "122 X-H264UC/90000")
                 + "a=fmtp:122 packetization-mode=1;mst-mode=NI-TC\r\n" if camera_on
                 else "m=video 0 RTP/SAVP 122\r\n"))
    h.feed(make_response(out, 200, to_tag="lync", body=answer.encode(),
                         headers=(("Contact", "<sip:alice@127.0.0.1;transport=tls>"),),
                         content_type="application/sdp"), lync_peer)
    ok = next(m for m, p in h.take() if isinstance(m, Response) and m.status == 200)
    return lync, camera, ok, answer.encode()


async def lync_connects(h: Harness, *streams: tuple[aioice.Connection, Media]) -> Call:
    """Lync (controlled) runs ICE on each stream against our offer of it; the call, once the
    relay has joined."""
    for agent, stream in streams:
        agent.remote_username = stream.attribute("ice-ufrag")
        agent.remote_password = stream.attribute("ice-pwd")
        for value in stream.attributes("candidate"):
            await agent.add_remote_candidate(parse_candidate(value).to_aioice())
        await agent.add_remote_candidate(None)
    await asyncio.wait_for(asyncio.gather(*(agent.connect() for agent, _ in streams)), 10)
    [call] = h.b2bua.calls.values()
    for _ in range(100):
        if call.media.relayed:
            return call
        await asyncio.sleep(0.02)
    raise AssertionError("the relay never joined")


async def test_a_phones_h264_reaches_lync_as_x_h264uc_and_lync_answers_back_as_h264() -> None:
    """A room system's H264 (level 3.1 raised to 1080p30 by max-fs/max-mbps, b=TIAS 1984
    kbps; also mode 0 and H.263): Lync is offered X-H264UC alone under 122 with its
    attributes, x-caps from 1080p30 at 1984 kbps down; Lync 2013's answer (x-mediabw at
    session level, 2500 received) reaches the phone as H264 under its own 109, constrained
    baseline no higher than the level it offered, b=AS 2500, PLI and FIR but no TMMBR (the
    phone offered none); the relay gets the plan, saying the phone takes no TMMBR, and
    the CDR's word is 1920x1080 negotiated once ICE ran on both streams (no frames sent)."""
    base = free_port()
    ports = PortAllocator(base, base + 40)
    h = Harness([FIRST], ports=ports, address="127.0.0.1", rules=RULES)
    h.feed(phone_invite(sdp_body(5004) + GROUP_VIDEO % 5006), PHONE)
    for _ in range(30):
        await h.settle()
    out, lync_peer = outbound(h.take(), "INVITE")
    audio, video = parse_sdp(out.body).media
    assert video.formats == ["122"] and video.proto == "RTP/SAVP" and video.has("ice-ufrag")
    assert video.rtpmaps()[122].encoding == "X-H264UC" and 109 not in video.rtpmaps()
    assert video.fmtp(122) == "packetization-mode=1;mst-mode=NI-TC"
    assert video.attribute("rtcp-fb") == "* x-message app send:src,x-pli recv:src,x-pli"
    assert video.has("rtcp-rsize") and video.label == "main-video" and video.has("rtcp-mux")
    assert video.attribute("x-mediabw") == "main-video send=1984;recv=1984"
    assert (video.attribute("x-caps") or "").startswith("122 263:1920:1080:30.0:1984000:1;")
    ours = video.ssrc_range()
    assert ours is not None and ours.last - ours.first == 99
    lync, camera, ok, _ = await lync_answers_video(
        h, out, lync_peer, os.urandom(30), "a=x-mediabw:main-video send=4000;recv=2500\r\n")
    to_phone = parse_sdp(ok.body).media[1]
    assert to_phone.formats == ["109"] and to_phone.proto == "RTP/AVP"
    assert to_phone.rtpmaps()[109].encoding == "H264"
    assert to_phone.fmtp(109) == "profile-level-id=42e01f;packetization-mode=1"
    assert to_phone.bandwidth("AS") == 2500 and to_phone.attributes("rtcp-fb") == [
        "109 nack pli", "109 ccm fir"]
    assert "x-" not in ok.body.decode() and "label" not in ok.body.decode()
    [call] = h.b2bua.calls.values()
    assert isinstance(call.media, LyncCallee)
    assert call.media.videos == {1: VideoPlan(
        122, 109, SipVideoLimits(1920, 1080, 30.0, 1984000), lync_ssrc_range=LYNC_SSRCS,
        lync_takes_vsr=True, lync_send_ssrc=ours.first, sip_takes_tmmbr=False)}
    await lync_connects(h, (lync, audio), (camera, video))
    assert call.media.video.startswith(
        "not up: no frames either way (1920x1080 negotiated); VSRs ")
    await call.media.close()
    await asyncio.gather(lync.close(), camera.close())
    assert ports.in_use == set()


def phone_bye(ok: Response) -> bytes:
    """The phone hangs up the call `ok` answered."""
    return (f"BYE sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK-pb"
            f"\r\nFrom: <sip:room12@10.0.0.7>;tag=phone\r\nTo: <sip:alice@gw.example.com>;"
            f"tag={ok.to.tag}\r\nCall-ID: to-lync-1\r\nCSeq: 9 BYE\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n").encode()


async def phone_hangs_up_after_video(h: Harness, ok: Response, cdrs: CdrStore,
                                     stats: dict[str, Any]) -> str:
    """The phone hangs up a call on which the source's 60 frames (2 key) crossed each
    way: the CDR says video was up, with the VSRs the relay counted, in the account of the
    last stream the relay joined (the one returned whole has any before it first)."""
    h.feed(phone_bye(ok), PHONE)
    for _ in range(10):
        await h.settle()
    word = str(cdrs.recent()[0]["video"])
    assert word.split(" | ")[-1] == (
        f"up: from Lync 640x360 60 frames (2 key), to Lync 640x360 60 frames (2 key); VSRs "
        f"{stats['vsr_sent']} sent, 0 received")
    cdrs.close()
    return word


@pytest.fixture(scope="module")
def x264(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[bytes]]:
    return source_video(tmp_path_factory)


async def test_video_flows_through_a_call_to_lync_both_ways_frame_for_frame(
        x264: tuple[Path, list[bytes]], tmp_path: Path) -> None:
    """A whole call: a room system's H264 toward a Lync client (ICE controlled, SRTP)
    answering X-H264UC. The phone's x264 packets reach Lync as [MS-H264PF] decoding to the
    source's frames, Lync's [MS-H264PF] (PACSI, prefix units) reaches the phone as RFC 6184
    under its own 109 decoding to them too, none lost; the CDR says what flowed."""
    tmp, source = x264
    base = free_port()
    ports = PortAllocator(base, base + 40)
    phone_video, phone_rx, phone_port = await phone()
    cdrs = CdrStore(tmp_path / "cdr.sqlite3")
    h = Harness([FIRST], cdrs, ports=ports, address="127.0.0.1", rules=RULES)
    h.feed(phone_invite(sdp_body(5004) + GROUP_VIDEO % phone_port), PHONE)
    for _ in range(30):
        await h.settle()
    out, lync_peer = outbound(h.take(), "INVITE")
    audio, video = parse_sdp(out.body).media
    camera_key = os.urandom(30)
    lync, camera, ok, _ = await lync_answers_video(h, out, lync_peer, camera_key)
    to_phone = parse_sdp(ok.body).media[1]
    call = await lync_connects(h, (lync, audio), (camera, video))
    at_lync = LyncStream(camera, camera_key, video)

    async def from_phone(packet: bytes) -> None:
        phone_video.sendto(packet, ("127.0.0.1", to_phone.port))

    await asyncio.gather(paced(from_phone, source), paced(at_lync.send, lync_packets(
        source, ssrc=LYNC_SSRCS[0], payload_type=122)))
    stats = await video_relayed(call, 60)
    at_phone = phone_rx.rtp()
    expected = frames(tmp, source, "source")
    assert lync_frames(tmp_path, at_lync.rtp, "at_lync") == expected
    assert frames(tmp_path, [p[:1] + bytes([p[1] & 0x80 | 96]) + p[2:] for p in at_phone],
                  "at_phone") == expected  # (the judge reads payload type 96)
    assert {p[1] & 0x7F for p in at_phone} == {109} and {p[1] & 0x7F for p in at_lync.rtp} == {
        122}
    await phone_hangs_up_after_video(h, ok, cdrs, stats)
    await asyncio.gather(lync.close(), at_lync.close())
    phone_video.close()
    assert ports.in_use == set()


@dataclass
class VideoToLync:
    """A room system's call with video to a Lync client, answered, ICE up."""

    h: Harness
    ports: PortAllocator
    call: Call
    ok: Response  # our 200 to the phone
    out: Request  # our INVITE to Lync
    lync_peer: Peer
    lync: aioice.Connection
    camera: aioice.Connection
    phone_sdp: bytes  # the phone's offer
    lync_sdp: bytes  # Lync's answer

    @property
    def from_phone(self) -> dict[str, str]:
        return leg("to-lync-1", "phone", self.ok.to.tag, "UDP 127.0.0.1:5062")

    @property
    def from_lync(self) -> dict[str, str]:
        peer = self.lync_peer
        return leg(self.out.call_id, "lync", self.out.from_.tag,
                   f"{peer.transport} {peer.host}:{peer.port}")


async def video_call_to_lync(h: Harness, ports: PortAllocator, phone_port: int, *,
                             camera_on: bool = True) -> VideoToLync:
    """The phone calls Lync with audio and H264 at `phone_port`; Lync answers X-H264UC, or
    (not `camera_on`) video with port 0; ICE runs on what it took."""
    phone_sdp = sdp_body(5004) + GROUP_VIDEO % phone_port
    h.feed(phone_invite(phone_sdp), PHONE)
    for _ in range(30):
        await h.settle()
    out, lync_peer = outbound(h.take(), "INVITE")
    audio, video = parse_sdp(out.body).media
    lync, camera, ok, lync_sdp = await lync_answers_video(h, out, lync_peer, os.urandom(30),
                                                          camera_on=camera_on)
    streams = [(lync, audio), (camera, video)] if camera_on else [(lync, audio)]
    call = await lync_connects(h, *streams)
    await our_reinvite(h)  # the second offer toward Lync (remote candidates)
    return VideoToLync(h, ports, call, ok, out, lync_peer, lync, camera, phone_sdp, lync_sdp)


async def video_removed_toward_lync(v: VideoToLync, by: str) -> None:
    """Lync (`by`) or the phone re-INVITEs with video rejected: the other leg gets our
    description with video rejected and audio as it was, its answer comes back as ours with
    video rejected, and the video's ICE port toward Lync and RTP and RTCP ports toward the
    phone are free on return."""
    h, held = v.h, len(v.ports.in_use)
    if by == "lync":
        h.feed(in_dialog("INVITE", 5, without_video(v.lync_sdp, b"2"), **v.from_lync),
               v.lync_peer)
        asker, other, answer = v.lync_peer, PHONE, without_video(v.phone_sdp, b"2")
    else:
        h.feed(in_dialog("INVITE", 2, without_video(v.phone_sdp, b"2"), **v.from_phone), PHONE)
        asker, other, answer = PHONE, v.lync_peer, without_video(v.lync_sdp, b"2")
    [(reinvite, peer)] = [(m, p) for m, p in h.take()
                          if isinstance(m, Request) and m.method == "INVITE"]
    assert peer == other
    offered = parse_sdp(reinvite.body)
    assert [(m.media, m.port == 0) for m in offered.media] == [("audio", False),
                                                               ("video", True)]
    ours = answered_back(h, reinvite, answer, other, asker, 5 if by == "lync" else 2)
    assert [(m.media, m.port == 0) for m in ours.media] == [("audio", False), ("video", True)]
    assert isinstance(v.call.media, LyncCallee)
    video_ports = {v.call.media.sip_ports[1], v.call.media.sip_ports[1] + 1}  # RTP, RTCP
    for _ in range(20):
        await h.settle()
        if len(v.ports.in_use) <= held - 3:
            break
    # The video's ICE port toward Lync, and its RTP and RTCP ports toward the phone.
    assert len(v.ports.in_use) == held - 3 and not video_ports & v.ports.in_use


@pytest.mark.parametrize("by", ["lync", "phone"])
async def test_video_removed_mid_call_toward_lync_stops_on_both(by: str) -> None:
    """On a call from a room system to a Lync client, a re-INVITE that rejects video, from
    either, crosses to the other leg and comes back as our answer with video rejected; the
    video's ICE session toward Lync closes and its relay stops (its ports are free) while
    the call goes on, and the CDR's word says who removed it."""
    base = free_port()
    ports = PortAllocator(base, base + 40)
    h = Harness([FIRST], ports=ports, address="127.0.0.1", rules=RULES)
    v = await video_call_to_lync(h, ports, 5006)
    await video_removed_toward_lync(v, by)
    assert v.call in h.b2bua.calls.values()
    assert v.call.media.video.endswith(
        f"; video removed mid-call by the {'callee' if by == 'lync' else 'caller'}")
    await v.call.media.close()
    await asyncio.gather(v.lync.close(), v.camera.close())
    assert ports.in_use == set()


@pytest.mark.parametrize(("removed_by", "offered_by"), [
    ("lync", "lync"), ("phone", "lync"), ("phone", "phone"), ("lync", "phone"),
    ("lync's answer", "lync")])
async def test_video_offered_again_where_it_was_removed_toward_lync_flows_both_ways(
        x264: tuple[Path, list[bytes]], tmp_path: Path, removed_by: str,
        offered_by: str) -> None:
    """A room system's video call to a Lync client whose video was removed mid-call by
    either (port 0), or that Lync answered with video at port 0 (camera off): video offered
    again at that same m= line (RFC 3264 8.1 reuse) by Lync or by the room is taken up as
    added video is, at m= line 1 on both legs: the other leg re-offered it (the room H264
    at a new relay port, Lync X-H264UC with our candidates and key), its answer making
    ours; we control ICE, the relay joins the stream, Lync gets the new pair named in a
    second offer, frames flow both ways frame for frame (x264 source, ffmpeg the judge), a
    refresh from the room is answered here, the CDR says video was up (after the removed
    stream's account), and every port goes at the end."""
    base = free_port()
    ports = PortAllocator(base, base + 40)
    cdrs = CdrStore(tmp_path / "cdr.sqlite3")
    h = Harness([FIRST], cdrs, ports=ports, address="127.0.0.1", rules=RULES)
    phone_video, phone_rx, phone_port = await phone()
    v = await video_call_to_lync(h, ports, phone_port, camera_on=removed_by != "lync's answer")
    if removed_by != "lync's answer":
        await video_removed_toward_lync(v, removed_by)
    assert isinstance(v.call.media, LyncCallee)
    removed_port = v.call.media.sip_ports[1]
    camera = aioice.Connection(ice_controlling=False, components=1, use_ipv6=False)
    await camera.gather_candidates()
    camera_key = os.urandom(30)
    lync_sdp = lync_with_video(v.lync, os.urandom(30), camera, camera_key, 3)
    phone_sdp = v.phone_sdp.replace(b"o=- 1 1", b"o=- 1 3")
    if offered_by == "phone":
        reinvite, offered = await reoffered(h, 3, phone_sdp, v.from_phone, PHONE,
                                            v.out.call_id)
        at_lync_ours = offered.media[1]
        ours = answered_back(h, reinvite, lync_sdp, v.lync_peer, PHONE, 3)
        to_phone = ours.media[1]
        assert to_phone.formats == ["109"] and to_phone.rtpmaps()[109].encoding == "H264"
    else:
        reinvite, offered = await reoffered(h, 6, lync_sdp, v.from_lync, v.lync_peer,
                                            "to-lync-1")
        to_phone = offered.media[1]
        assert to_phone.formats == ["122"] and to_phone.rtpmaps()[122].encoding == "H264"
        room_answer = sdp_body(5004).replace(b"o=- 1 1", b"o=- 1 3") + PHONE_VIDEO % phone_port
        ours = answered_back(h, reinvite, room_answer, PHONE, v.lync_peer, 6)
        at_lync_ours = ours.media[1]
        assert [c.tag for c in at_lync_ours.cryptos()] == [1]
    assert [(m.media, m.rejected) for m in offered.media] == [("audio", False),
                                                              ("video", False)]
    assert [(m.media, m.rejected) for m in ours.media] == [("audio", False), ("video", False)]
    assert at_lync_ours.rtpmaps()[122].encoding == "X-H264UC"
    assert at_lync_ours.has("ice-ufrag") and at_lync_ours.attributes("candidate")
    assert to_phone.port not in (0, removed_port)
    await lync_connects(h, (camera, at_lync_ours))
    second = await our_reinvite(h)  # the relay joins, then Lync is told the new pair
    assert all(m.has("remote-candidates") for m in parse_sdp(second.body).media)
    at_lync = LyncStream(camera, camera_key, at_lync_ours)
    stats = await video_crosses(v.call, at_lync, LYNC_SSRCS[0], phone_video, phone_rx,
                                to_phone.port, x264, tmp_path)
    # The room restating its last description (a refresh) changes nothing: answered here.
    h.feed(in_dialog("INVITE", 4, phone_sdp if offered_by == "phone" else room_answer,
                     **v.from_phone), PHONE)
    sent = h.take()
    assert not [m for m, _ in sent if isinstance(m, Request)]
    assert [m.status for m, _ in sent if isinstance(m, Response)][-1] == 200
    word = await phone_hangs_up_after_video(h, v.ok, cdrs, stats)
    if removed_by == "lync's answer":
        assert " | " not in word
    else:
        party = "callee" if removed_by == "lync" else "caller"
        assert word.split(" | ")[0].endswith(f"; video removed mid-call by the {party}")
    await asyncio.gather(v.lync.close(), v.camera.close(), at_lync.close())
    phone_video.close()
    assert ports.in_use == set()


async def test_video_offered_again_toward_lync_that_lync_declines_is_rejected() -> None:
    """Video removed mid-call by the room, then offered again by it at its old m= line:
    Lync declining our X-H264UC re-offer (port 0) makes our 200 to the room reject the
    line (audio as it was); the stream's new ICE session and relay port go back, and the
    same offer again (a refresh) is answered here with Lync not asked."""
    base = free_port()
    ports = PortAllocator(base, base + 40)
    h = Harness([FIRST], ports=ports, address="127.0.0.1", rules=RULES)
    v = await video_call_to_lync(h, ports, 5006)
    await video_removed_toward_lync(v, "phone")
    held = set(ports.in_use)
    again = v.phone_sdp.replace(b"o=- 1 1", b"o=- 1 3")
    reinvite, offered = await reoffered(h, 3, again, v.from_phone, PHONE, v.out.call_id)
    assert [(m.media, m.rejected) for m in offered.media] == [("audio", False),
                                                              ("video", False)]
    ours = answered_back(h, reinvite, without_video(v.lync_sdp, b"3"), v.lync_peer, PHONE, 3)
    assert [(m.media, m.rejected) for m in ours.media] == [("audio", False), ("video", True)]
    assert ours.media[0].lines == parse_sdp(v.ok.body).media[0].lines
    await h.ports_back(ports, held)
    h.feed(in_dialog("INVITE", 4, again, **v.from_phone), PHONE)
    sent = h.take()
    assert not [m for m, _ in sent if isinstance(m, Request)]  # Lync is not asked
    [refreshed] = [m for m, _ in sent if isinstance(m, Response) and m.status == 200]
    assert refreshed.body == v.call.caller.sdp_to
    assert v.call.media.video.endswith("; video removed mid-call by the caller")
    await v.call.media.close()
    await asyncio.gather(v.lync.close(), v.camera.close())
    assert ports.in_use == set()


async def test_a_phones_video_without_h264_mode_1_is_refused_toward_both_legs() -> None:
    """H.263 and H264 mode 0 cannot become X-H264UC: Lync is offered the video stream
    rejected, the phone gets it rejected in the answer, the call is audio, and the CDR's
    word says why."""
    base = free_port()
    ports = PortAllocator(base, base + 40)
    h = Harness([FIRST], ports=ports, address="127.0.0.1", rules=RULES)
    video = (b"m=video 5006 RTP/AVP 110 34\r\na=rtpmap:110 H264/90000\r\n"
             b"a=rtpmap:34 H263/90000\r\n")
    h.feed(phone_invite(sdp_body(5004) + video), PHONE)
    for _ in range(30):
        await h.settle()
    out, _ = outbound(h.take(), "INVITE")
    audio, rejected = parse_sdp(out.body).media
    assert rejected.rejected and not audio.rejected
    [call] = h.b2bua.calls.values()
    assert isinstance(call.media, LyncCallee)
    assert call.media.video == ("refused: no H264 with packetization-mode=1 (Lync takes no "
                                "other video untranscoded)")
    await call.media.close()
    assert ports.in_use == set()



async def audio_call_to_lync(h: Harness) -> tuple[Response, Request, Request, Peer,
                                                  aioice.Connection, bytes]:
    """A room system's audio call to a Lync client, ICE up and our second offer (remote
    candidates) answered. (Our 200 to the phone, our INVITE and that second offer to Lync,
    Lync's peer, its agent and key.)"""
    h.feed(phone_invite(sdp_body(5004)), PHONE)
    for _ in range(30):
        await h.settle()
    out, lync_peer = outbound(h.take(), "INVITE")
    lync, lync_key = await lync_client_answers(h, out, lync_peer)
    sent = h.take()
    [ok] = [m for m, p in sent if isinstance(m, Response) and p == PHONE]
    [named] = [m for m, _ in sent if isinstance(m, Request) and m.method == "INVITE"]
    h.feed(make_response(named, 200, body=audio_answer(lync, lync_key),
                         headers=(("Contact", "<sip:alice@127.0.0.1;transport=tls>"),),
                         content_type="application/sdp"), lync_peer)
    h.take()  # the ACK
    return ok, out, named, lync_peer, lync, lync_key


def lync_with_video(lync: aioice.Connection, lync_key: bytes, camera: aioice.Connection,
                    camera_key: bytes, version: int) -> bytes:
    """Lync 2013's description of an audio and X-H264UC call (an offer or an answer)."""
    return (f"v=0\r\no=- 0 {version} IN IP4 127.0.0.1\r\ns=session\r\n"
            "c=IN IP4 127.0.0.1\r\nt=0 0\r\n" + lync_stream(lync, lync_key, "audio", "9 G722/8000")
            + lync_stream(camera, camera_key, "video", "122 X-H264UC/90000")
            + "a=fmtp:122 packetization-mode=1;mst-mode=NI-TC\r\n").encode()


def audio_lines(description: SessionDescription) -> list[str]:
    """The audio stream's lines, but a=remote-candidates (which only our offers name)."""
    return [str(line) for line in description.media[0].lines
            if not str(line).startswith("a=remote-candidates")]


PHONE_VIDEO = (b"m=video %d RTP/AVP 96\r\nb=AS:1500\r\na=rtpmap:96 H264/90000\r\n"
               b"a=fmtp:96 profile-level-id=42e01f;packetization-mode=1\r\n")


@pytest.mark.parametrize("by", ["phone", "lync"])
async def test_video_added_mid_call_toward_lync_flows_both_ways(
        x264: tuple[Path, list[bytes]], tmp_path: Path, by: str) -> None:
    """An audio call from a room system to a Lync client, to which either adds video by
    re-INVITE. ICE is gathered for the new stream, and the other leg re-offered it (next o=
    version, audio as in our last description to it): Lync X-H264UC with our candidates
    and key when the room added H264, the room H264 at a new relay port when Lync added
    X-H264UC. Its answer makes ours to the leg that added video (audio as it was, our
    candidates and a key answering Lync's toward Lync). We control ICE for the stream, the
    relay joins it, Lync gets the new pair named in a second offer (a=remote-candidates),
    and frames flow both ways frame for frame (x264 source, ffmpeg the judge); the CDR
    says video was up, and every port goes at the end."""
    base = free_port()
    ports = PortAllocator(base, base + 40)
    cdrs = CdrStore(tmp_path / "cdr.sqlite3")
    h = Harness([FIRST], cdrs, ports=ports, address="127.0.0.1", rules=RULES)
    ok, out, named, lync_peer, lync, lync_key = await audio_call_to_lync(h)
    phone_video, phone_rx, phone_port = await phone()
    camera = aioice.Connection(ice_controlling=False, components=1, use_ipv6=False)
    await camera.gather_candidates()
    camera_key = os.urandom(30)
    phone_sdp = sdp_body(5004).replace(b"o=- 1 1", b"o=- 1 2")
    lync_sdp = lync_with_video(lync, lync_key, camera, camera_key, 2)
    first = parse_sdp(ok.body)
    if by == "phone":
        h.feed(in_dialog("INVITE", 2, phone_sdp + GROUP_VIDEO % phone_port,
                         call_id="to-lync-1", from_tag="phone", to_tag=str(ok.to.tag),
                         via="UDP 127.0.0.1:5062"), PHONE)
        reinvite = await our_reinvite(h)
        assert reinvite.call_id == out.call_id
        before, offered = parse_sdp(named.body), parse_sdp(reinvite.body)
        at_lync_ours = offered.media[1]
        assert at_lync_ours.formats == ["122"]
        assert at_lync_ours.rtpmaps()[122].encoding == "X-H264UC"
        assert not at_lync_ours.has("remote-candidates")
        assert (at_lync_ours.attribute("x-caps") or "").startswith(
            "122 263:1920:1080:30.0:1984000:1;")
        ours = answered_back(h, reinvite, lync_sdp, lync_peer, PHONE, 2)
        before_ours = first
        to_phone = ours.media[1]
        assert to_phone.formats == ["109"] and to_phone.rtpmaps()[109].encoding == "H264"
        phone_sends_to = to_phone.port
    else:
        h.feed(in_dialog("INVITE", 5, lync_sdp, call_id=out.call_id, from_tag="lync",
                         to_tag=str(out.from_.tag),
                         via=f"{lync_peer.transport} {lync_peer.host}:{lync_peer.port}"),
               lync_peer)
        reinvite = await our_reinvite(h)
        assert reinvite.call_id == "to-lync-1"
        before, offered = first, parse_sdp(reinvite.body)
        to_phone = offered.media[1]
        assert to_phone.formats == ["122"] and to_phone.rtpmaps()[122].encoding == "H264"
        assert to_phone.fmtp(122) == "profile-level-id=42e028;packetization-mode=1"
        assert "x-" not in reinvite.body.decode() and "ice" not in reinvite.body.decode()
        ours = answered_back(h, reinvite, phone_sdp + PHONE_VIDEO % phone_port, PHONE,
                             lync_peer, 5)
        before_ours = parse_sdp(named.body)
        at_lync_ours = ours.media[1]
        assert at_lync_ours.rtpmaps()[122].encoding == "X-H264UC"
        assert [c.tag for c in at_lync_ours.cryptos()] == [1]
        assert not any(m.has("remote-candidates") for m in ours.media)
        phone_sends_to = to_phone.port
    assert offered.origin[2] == str(int(before.origin[2]) + 1)
    assert offered.media[0].lines == before.media[0].lines  # audio as it was
    assert ours.origin[2] == str(int(before_ours.origin[2]) + 1)
    assert audio_lines(ours) == audio_lines(before_ours)
    assert at_lync_ours.has("ice-ufrag") and at_lync_ours.attributes("candidate")
    assert phone_sends_to not in (0, first.media[0].port)
    [call] = h.b2bua.calls.values()
    assert isinstance(call.media, LyncCallee)
    await lync_connects(h, (camera, at_lync_ours))
    second = await our_reinvite(h)  # the relay joins, then Lync is told the new pair
    named_again = parse_sdp(second.body)
    assert all(m.has("remote-candidates") for m in named_again.media)
    at_lync = LyncStream(camera, camera_key, at_lync_ours)
    stats = await video_crosses(call, at_lync, LYNC_SSRCS[0], phone_video, phone_rx,
                                phone_sends_to, x264, tmp_path)
    await phone_hangs_up_after_video(h, ok, cdrs, stats)
    await asyncio.gather(lync.close(), at_lync.close())
    phone_video.close()
    assert ports.in_use == set()


@pytest.mark.parametrize("phone_video", [b"m=video 0 RTP/AVP 96\r\n", None],
                         ids=["phone declines", "x-rtvc1 only"])
async def test_video_lync_adds_that_cannot_be_carried_is_declined_and_the_call_goes_on(
        phone_video: bytes | None) -> None:
    """On an audio call from a room system, Lync adds video the call cannot carry: the
    room declining our H264 re-offer makes our 200 to Lync reject the stream (audio as it
    was), and x-rtvc1-only video is rejected without asking the room. Either way the new
    stream's ports go back, the CDR's word says why, and the call goes on."""
    base = free_port()
    ports = PortAllocator(base, base + 40)
    h = Harness([FIRST], ports=ports, address="127.0.0.1", rules=RULES)
    _, out, named, lync_peer, lync, lync_key = await audio_call_to_lync(h)
    held = set(ports.in_use)
    camera = aioice.Connection(ice_controlling=False, components=1, use_ipv6=False)
    await camera.gather_candidates()
    lync_sdp = lync_with_video(lync, lync_key, camera, os.urandom(30), 2)
    if phone_video is None:
        lync_sdp = lync_sdp.replace(b"X-H264UC", b"x-rtvc1").replace(
            b"a=fmtp:122 packetization-mode=1;mst-mode=NI-TC\r\n", b"")
    h.feed(in_dialog("INVITE", 5, lync_sdp, call_id=out.call_id, from_tag="lync",
                     to_tag=str(out.from_.tag),
                     via=f"{lync_peer.transport} {lync_peer.host}:{lync_peer.port}"),
           lync_peer)
    if phone_video is None:
        sent = h.take()
        assert not [m for m, _ in sent if isinstance(m, Request)]  # the room is not asked
        [answered] = [m for m, _ in sent if isinstance(m, Response) and m.status == 200]
        ours = parse_sdp(answered.body)
        why = "x-rtvc1 only (RTVideo needs transcoding)"
    else:
        reinvite = await our_reinvite(h)
        ours = answered_back(h, reinvite, sdp_body(5004).replace(b"o=- 1 1", b"o=- 1 2")
                             + phone_video, PHONE, lync_peer, 5)
        why = "the SIP side declined video"
    assert [(m.media, m.rejected) for m in ours.media] == [("audio", False), ("video", True)]
    assert audio_lines(ours) == audio_lines(parse_sdp(named.body))
    [call] = h.b2bua.calls.values()
    await h.ports_back(ports, held)
    assert call.media.video == f"refused: {why}"
    await call.media.close()
    await asyncio.gather(lync.close(), camera.close())
    assert ports.in_use == set()
