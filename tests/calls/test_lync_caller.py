"""A Lync-style call end to end on loopback: the caller (an aioice agent playing the Lync
client) sends a multipart offer with ICE candidates and SRTP keys; the gateway offers plain
RTP to the SIP side, answers Lync with its own candidates and key, terminates ICE, and the
relay carries SRTP from Lync as RTP to the SIP phone and back, renumbering payload types
the phone numbered differently and sending RTCP where the phone's a=rtcp says. Also: the
rule's bandwidth cap and STUN server reach both SDPs, streams gather side by side, a call
that ends while gathering gives every port back, and video is translated X-H264UC <-> H264
through the whole call, frame for frame both ways (x264 and ffmpeg as judges)."""

from __future__ import annotations

import asyncio
import base64
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aioice
import pytest

from gateway.calls.call import Call
from gateway.calls.cdr import CdrStore
from gateway.calls.lync_caller import LyncCaller
from gateway.media.video_plan import SipVideoLimits, VideoPlan
from gateway.sip.message import Request, Response, make_response
from gateway.transport.peer import Peer
from ice.candidate import parse_candidate
from ice.ports import PortAllocator
from sdp.model import Media
from sdp.multipart import pick_sdp, split
from sdp.parse import parse_sdp
from sdp.sdes import Encryption
from tests.kit.calls import (
    FIRST,
    RULES,
    Harness,
    Phone,
    answered_back,
    in_dialog,
    leg,
    our_reinvite,
    outbound,
    phone,
    reoffered,
    video_crosses,
    video_relayed,
    without_video,
)
from tests.kit.lync import (
    BOUNDARY,
    LYNC,
    LYNC_VIDEO_SSRCS,
    LyncStream,
    StunServer,
    invite,
    lync_offer,
    lync_video,
)
from tests.kit.media import crypto, far_end, rtcp_sr, rtp
from tests.kit.video import frames, lync_frames, lync_packets, paced, source_video
from tests.peers import free_port


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6:
                        ["127.0.0.1"])


@pytest.mark.parametrize("event_pt", [101, 96])
async def test_lync_ice_and_srtp_to_a_plain_rtp_phone(event_pt: int) -> None:
    """Media both ways; with the phone numbering telephone-event 96 where Lync has 101,
    Lync's events reach it as 96 and its own come back to Lync as 101."""
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
    rtcp_sock, rtcp_rx, rtcp_port = await phone()
    sip_answer = (f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                  f"m=audio {phone_port} RTP/AVP 9 {event_pt}\r\na=rtcp:{rtcp_port}\r\n"
                  f"a=rtpmap:9 G722/8000\r\na=rtpmap:{event_pt} telephone-event/8000\r\n"
                  ).encode()
    h.feed(make_response(out, 200, to_tag="phone", headers=(("Contact", "<sip:p@127.0.0.1>"),),
                         body=sip_answer, content_type="application/sdp"), peer)
    sent = h.take()
    ok = next(m for m, p in sent if isinstance(m, Response) and m.status == 200 and p == LYNC)
    assert ok.headers.get("Content-Type") == "application/sdp"
    answer = parse_sdp(ok.body)
    ours, sharing = answer.media
    assert sharing.rejected and ours.proto == "RTP/SAVP" and ours.formats == ["9", "101"]
    our_key = base64.b64decode(ours.cryptos()[0].key)

    lync.remote_username = ours.attribute("ice-ufrag")
    lync.remote_password = ours.attribute("ice-pwd")
    for value in ours.attributes("candidate"):
        await lync.add_remote_candidate(parse_candidate(value).to_aioice())
    await lync.add_remote_candidate(None)
    await asyncio.wait_for(lync.connect(), 10)
    for _ in range(40):  # the gateway's side of ICE completes and the relay joins
        await asyncio.sleep(0.02)
        if any(c.media.relayed for c in h.b2bua.calls.values()):
            break

    tx, rx = far_end(lync_key, True), far_end(our_key, False)
    await lync.send(tx.protect(rtp(1, pt=9, ssrc=42)))
    assert await asyncio.wait_for(phone_rx.got.get(), 5) == rtp(1, pt=9, ssrc=42)
    [call] = h.b2bua.calls.values()
    assert isinstance(call.media, LyncCaller) and call.media.relay is not None
    sip_port = call.media.sip_ports[0]
    phone_sock.sendto(rtp(2, pt=9, ssrc=77), ("127.0.0.1", sip_port))
    assert rx.unprotect(await asyncio.wait_for(lync.recv(), 5)) == rtp(2, pt=9, ssrc=77)
    await lync.send(tx.protect(rtp(3, pt=101, ssrc=42)))
    assert await asyncio.wait_for(phone_rx.got.get(), 5) == rtp(3, pt=event_pt, ssrc=42)
    for seq, pt in ((4, 101), (5, event_pt)):  # as we offered it, and as it numbers it
        phone_sock.sendto(rtp(seq, pt=pt, ssrc=77), ("127.0.0.1", sip_port))
        assert rx.unprotect(await asyncio.wait_for(lync.recv(), 5)) == rtp(seq, pt=101,
                                                                            ssrc=77)
    await lync.send(tx.protect_rtcp(rtcp_sr(42)))
    assert await asyncio.wait_for(rtcp_rx.got.get(), 5) == rtcp_sr(42)  # to its a=rtcp
    assert h.b2bua.statistics().ice == {"connected": 1, "failed": 0}

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
    rtcp_sock.close()


RULE_WITH_CAP = RULES.replace('replace = ', 'max_bandwidth_kbps = 512\nreplace = ')


async def test_the_rules_bandwidth_cap_and_stun_server_reach_both_sides() -> None:
    """The SIP side's offer asks for no more than the rule's cap (b=AS/b=TIAS) and so does
    the answer to Lync (with Lync's x-mediabw lowered too); the STUN server of the node's
    location (the rule names none: automatic) gives Lync a server-reflexive candidate."""
    stun_transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        StunServer, local_addr=("127.0.0.1", 0))
    stun_at = ("127.0.0.1", int(stun_transport.get_extra_info("sockname")[1]))
    base = free_port()
    ports = PortAllocator(base, base + 40)
    lync = aioice.Connection(ice_controlling=True, components=1, use_ipv6=False)
    await lync.gather_candidates()
    h = Harness([FIRST], ports=ports, address="127.0.0.1", rules=RULE_WITH_CAP)
    h.configure(stun_servers={"edge-stun": stun_at}, location_stun={"": "edge-stun"})
    offer = lync_offer(lync, os.urandom(30)).replace(
        b"a=label:main-audio\r\n", b"a=label:main-audio\r\na=x-mediabw:main-audio "
        b"send=2000;recv=100\r\n")
    h.feed(invite(offer), LYNC)
    for _ in range(30):
        await h.settle()
    out, peer = outbound(h.take(), "INVITE")
    audio = parse_sdp(out.body).media[0]
    assert (audio.bandwidth("AS"), audio.bandwidth("TIAS")) == (512, 512000)
    sip_answer = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                  b"m=audio 5004 RTP/AVP 9\r\na=rtpmap:9 G722/8000\r\n")
    h.feed(make_response(out, 200, to_tag="phone", headers=(("Contact", "<sip:p@127.0.0.1>"),),
                         body=sip_answer, content_type="application/sdp"), peer)
    ok = next(m for m, p in h.take() if isinstance(m, Response) and m.status == 200)
    ours = parse_sdp(ok.body).media[0]
    assert (ours.bandwidth("AS"), ours.bandwidth("TIAS")) == (512, 512000)
    assert ours.attribute("x-mediabw") == "main-audio send=100;recv=512"
    assert any(" typ srflx " in c for c in ours.attributes("candidate"))
    [call] = h.b2bua.calls.values()
    assert isinstance(call.media, LyncCaller)
    await call.media.close()
    await lync.close()
    stun_transport.close()
    assert ports.in_use == set()


async def test_hold_and_resume_cross_the_lync_leg_whose_ice_ends_here() -> None:
    """Lync's media ends at the gateway (ICE, SRTP), so its SDP cannot go to the phone:
    a hold from Lync reaches the phone as our offer to it with a=sendonly, and the phone's
    recvonly comes back to Lync in our own answer (same ICE credentials and key, next o=
    version); the remote-candidates INVITE is still answered here; a hold from the phone
    reaches Lync the same way."""
    base = free_port()
    h = Harness([FIRST], ports=PortAllocator(base, base + 40), address="127.0.0.1")
    lync = aioice.Connection(ice_controlling=True, components=1, use_ipv6=False)
    await lync.gather_candidates()
    h.feed(invite(lync_offer(lync, os.urandom(30))), LYNC)
    for _ in range(30):
        await h.settle()
    out, peer = outbound(h.take(), "INVITE")
    phone_sdp = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                 b"m=audio 7000 RTP/AVP 9\r\na=rtpmap:9 G722/8000\r\n")
    h.feed(make_response(out, 200, to_tag="phone", headers=(("Contact", "<sip:p@127.0.0.1>"),),
                         body=phone_sdp, content_type="application/sdp"), peer)
    ok = next(m for m, p in h.take() if isinstance(m, Response) and m.status == 200)
    first_answer = parse_sdp(ok.body)
    lync_part = pick_sdp(split(invite(lync_offer(lync, b"k" * 30)).split(b"\r\n\r\n", 1)[1],
                              BOUNDARY)).body
    from_lync = {"call_id": "lync-call-1", "from_tag": "lync", "to_tag": str(ok.to.tag),
                 "via": "TLS 127.0.0.1:5061"}

    # The second INVITE with Lync's remote candidates changes no direction: answered here.
    candidates = lync_part.replace(b"o=- 0 1", b"o=- 0 2") + b"a=remote-candidates:1 x 1\r\n"
    h.feed(in_dialog("INVITE", 2, candidates, **from_lync), LYNC)
    sent = h.take()
    assert not [m for m, _ in sent if isinstance(m, Request)]
    assert [m.status for m, _ in sent if isinstance(m, Response)] == [100, 200]

    held = lync_part.replace(b"a=rtcp-mux\r\n", b"a=rtcp-mux\r\na=sendonly\r\n")
    h.feed(in_dialog("INVITE", 3, held.replace(b"o=- 0 1", b"o=- 0 3"), **from_lync), LYNC)
    [(reinvite, to_phone)] = [(m, p) for m, p in h.take()
                              if isinstance(m, Request) and m.method == "INVITE"]
    assert to_phone == peer and reinvite.call_id == out.call_id
    offered = parse_sdp(reinvite.body)
    assert offered.media[0].direction == "sendonly"
    assert offered.origin[2] == str(int(parse_sdp(out.body).origin[2]) + 1)
    assert offered.media[0].port == parse_sdp(out.body).media[0].port  # the same relay port
    recvonly = phone_sdp.replace(b"o=- 1 1", b"o=- 1 2") + b"a=recvonly\r\n"
    answer = answered_back(h, reinvite, recvonly, peer, LYNC, 3)
    audio, first = answer.media[0], first_answer.media[0]
    assert audio.direction == "recvonly" and answer.origin[2] == str(
        int(first_answer.origin[2]) + 1)
    assert audio.attribute("ice-ufrag") == first.attribute("ice-ufrag")
    assert audio.cryptos() == first.cryptos() and audio.formats == first.formats

    # The phone holds: Lync gets our description with a=sendonly, and answers recvonly.
    from_phone = {"call_id": out.call_id, "from_tag": "phone", "to_tag": str(out.from_.tag),
                  "via": "UDP 198.51.100.1:5060"}
    phone_hold = phone_sdp.replace(b"o=- 1 1", b"o=- 1 3") + b"a=sendonly\r\n"
    h.feed(in_dialog("INVITE", 1, phone_hold, **from_phone), peer)
    [(to_lync, lync_peer)] = [(m, p) for m, p in h.take()
                              if isinstance(m, Request) and m.method == "INVITE"]
    assert lync_peer == LYNC and to_lync.call_id == "lync-call-1"
    assert parse_sdp(to_lync.body).media[0].direction == "sendonly"
    lync_recvonly = lync_part.replace(b"o=- 0 1", b"o=- 0 4").replace(
        b"a=rtcp-mux\r\n", b"a=rtcp-mux\r\na=recvonly\r\n")
    h.feed(make_response(to_lync, 200, headers=(("Contact", "<sip:bob@example.com>"),),
                         body=lync_recvonly, content_type="application/sdp"), LYNC)
    [to_phone_ok] = [m for m, p in h.take() if isinstance(m, Response) and p == peer]
    assert to_phone_ok.status == 200 and parse_sdp(to_phone_ok.body).media[0].direction == (
        "recvonly")
    assert parse_sdp(to_phone_ok.body).media[0].formats == ["9"]  # what the phone offered
    [call] = h.b2bua.calls.values()
    assert call.caller.directions == {"audio": "sendonly"}  # sharing was never up
    assert call.callee.directions == {"audio": "sendonly"}
    h.feed(in_dialog("BYE", 4, b"", **from_lync), LYNC)
    for _ in range(10):
        await h.settle()
    await lync.close()


def phone_answer(port: int, extra: bytes = b"", proto: bytes = b"RTP/AVP") -> bytes:
    return (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            b"m=audio %d %s 9\r\na=rtpmap:9 G722/8000\r\n%s" % (port, proto, extra))


async def ice_connects(lync: aioice.Connection, ours: Media) -> None:
    """Lync (controlling) runs ICE for one stream against our answer."""
    lync.remote_username = ours.attribute("ice-ufrag")
    lync.remote_password = ours.attribute("ice-pwd")
    for value in ours.attributes("candidate"):
        await lync.add_remote_candidate(parse_candidate(value).to_aioice())
    await lync.add_remote_candidate(None)
    await asyncio.wait_for(lync.connect(), 10)


async def ice_completes(h: Harness, *streams: tuple[aioice.Connection, Media]) -> None:
    """Lync runs ICE on each stream against our answer; the relay has joined on return."""
    await asyncio.gather(*(ice_connects(lync, ours) for lync, ours in streams))
    for _ in range(100):
        if any(c.media.relayed for c in h.b2bua.calls.values()):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the relay never joined")


async def test_encryption_required_offers_the_phone_srtp_and_relays_it() -> None:
    """With sip_media_encryption "required" the phone is offered RTP/SAVP with our key; its
    answer's key (our tag and suite) unprotects what it sends, and Lync's media reaches it
    protected with ours (libsrtp at both far ends)."""
    base = free_port()
    ports = PortAllocator(base, base + 40)
    lync = aioice.Connection(ice_controlling=True, components=1, use_ipv6=False)
    await lync.gather_candidates()
    lync_key = os.urandom(30)
    phone_sock, phone_rx, phone_port = await phone()
    h = Harness([FIRST], ports=ports, address="127.0.0.1")
    h.configure(encryption="required")
    h.feed(invite(lync_offer(lync, lync_key)), LYNC)
    for _ in range(30):
        await h.settle()
    out, peer = outbound(h.take(), "INVITE")
    offered = parse_sdp(out.body).media[0]
    [ours_to_phone] = offered.cryptos()
    assert offered.proto == "RTP/SAVP" and ours_to_phone.suite == "AES_CM_128_HMAC_SHA1_80"
    phone_crypto, phone_key = crypto(mki=False)
    answer_key = replace(phone_crypto, tag=ours_to_phone.tag)
    h.feed(make_response(out, 200, to_tag="phone", headers=(("Contact", "<sip:p@127.0.0.1>"),),
                         body=phone_answer(phone_port, b"a=crypto:%s\r\n" % str(
                             answer_key).encode(), b"RTP/SAVP"),
                         content_type="application/sdp"), peer)
    ok = next(m for m, p in h.take() if isinstance(m, Response) and m.status == 200 and p == LYNC)
    ours = parse_sdp(ok.body).media[0]
    our_lync_key = base64.b64decode(ours.cryptos()[0].key)
    await ice_completes(h, (lync, ours))

    [call] = h.b2bua.calls.values()
    assert isinstance(call.media, LyncCaller)
    sip_port = call.media.sip_ports[0]
    lync_tx, lync_rx = far_end(lync_key, True), far_end(our_lync_key, False)
    phone_tx = far_end(phone_key, True)
    phone_rx_srtp = far_end(base64.b64decode(ours_to_phone.key), False)
    await lync.send(lync_tx.protect(rtp(1, pt=9, ssrc=42)))
    got = await asyncio.wait_for(phone_rx.got.get(), 5)
    assert got != rtp(1, pt=9, ssrc=42) and phone_rx_srtp.unprotect(got) == rtp(1, pt=9, ssrc=42)
    phone_sock.sendto(phone_tx.protect(rtp(2, pt=9, ssrc=77)), ("127.0.0.1", sip_port))
    assert lync_rx.unprotect(await asyncio.wait_for(lync.recv(), 5)) == rtp(2, pt=9, ssrc=77)
    phone_sock.sendto(phone_tx.protect_rtcp(rtcp_sr(77)), ("127.0.0.1", sip_port + 1))
    assert lync_rx.unprotect_rtcp(await asyncio.wait_for(lync.recv(), 5)) == rtcp_sr(77)
    await call.media.close()
    await lync.close()
    phone_sock.close()


@pytest.mark.parametrize("encryption", ["off", "best_effort"])
async def test_without_required_the_phone_gets_plain_rtp_and_lync_still_srtp(
        encryption: Encryption) -> None:
    """One m= line cannot offer SRTP and RTP both, so only "required" offers the phone SRTP;
    the setting is the SIP leg's, and Lync's SRTP offer is answered with SRTP under "off"
    too."""
    base = free_port()
    ports = PortAllocator(base, base + 40)
    lync = aioice.Connection(ice_controlling=True, components=1, use_ipv6=False)
    await lync.gather_candidates()
    h = Harness([FIRST], ports=ports, address="127.0.0.1")
    h.configure(encryption=encryption)
    h.feed(invite(lync_offer(lync, os.urandom(30))), LYNC)
    for _ in range(30):
        await h.settle()
    out, peer = outbound(h.take(), "INVITE")
    offered = parse_sdp(out.body).media[0]
    assert offered.proto == "RTP/AVP" and not offered.has("crypto")
    h.feed(make_response(out, 200, to_tag="phone", headers=(("Contact", "<sip:p@127.0.0.1>"),),
                         body=phone_answer(5004), content_type="application/sdp"), peer)
    ok = next(m for m, p in h.take() if isinstance(m, Response) and m.status == 200 and p == LYNC)
    ours = parse_sdp(ok.body).media[0]
    assert ours.proto == "RTP/SAVP" and len(ours.cryptos()) == 1
    [call] = h.b2bua.calls.values()
    assert isinstance(call.media, LyncCaller)
    await call.media.close()
    await lync.close()


@pytest.mark.parametrize("answered", [
    b"", b"a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:" + base64.b64encode(bytes(30)) + b"\r\n",
    b"a=crypto:7 AES_CM_128_HMAC_SHA1_80 inline:" + base64.b64encode(bytes(30)) + b"\r\n",
], ids=["no key", "another suite", "another tag"])
async def test_a_phone_accepting_our_srtp_offer_without_its_key_fails_the_call_488(
        answered: bytes) -> None:
    """An answer that accepts the SRTP stream without a key for our tag and suite cannot be
    used (RFC 4568 5.1.3): the phone's leg is hung up and Lync gets 488 saying why."""
    base = free_port()
    ports = PortAllocator(base, base + 40)
    lync = aioice.Connection(ice_controlling=True, components=1, use_ipv6=False)
    await lync.gather_candidates()
    h = Harness([FIRST], ports=ports, address="127.0.0.1")
    h.configure(encryption="required")
    h.feed(invite(lync_offer(lync, os.urandom(30))), LYNC)
    for _ in range(30):
        await h.settle()
    out, peer = outbound(h.take(), "INVITE")
    h.feed(make_response(out, 200, to_tag="phone", headers=(("Contact", "<sip:p@127.0.0.1>"),),
                         body=phone_answer(5004, answered, b"RTP/SAVP"),
                         content_type="application/sdp"), peer)
    for _ in range(10):
        await h.settle()
    sent = h.take()
    assert [m.method for m, p in sent if isinstance(m, Request) and p == peer] == ["ACK", "BYE"]
    [refused] = [m for m, p in sent if isinstance(m, Response) and p == LYNC]
    assert refused.status == 488 and "without an a=crypto answering ours" in refused.reason
    assert ports.in_use == set()
    await lync.close()


def bye_from_lync(to_tag: str) -> bytes:
    return (f"BYE sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bK-lb\r\n"
            f"From: \"Bob\" <sip:bob@example.com>;tag=lync\r\nTo: <sip:alice@gw.example.com>;"
            f"tag={to_tag}\r\nCall-ID: lync-call-1\r\nCSeq: 9 BYE\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n").encode()


PHONE_VIDEO = (b"m=video 5006 RTP/AVP 96\r\nb=AS:1500\r\na=rtpmap:96 H264/90000\r\n"
               b"a=fmtp:96 profile-level-id=42e01f;packetization-mode=1\r\n")
NO_FRAMES = "not up: no frames either way (%s negotiated); VSRs "
LYNC_ONLY = ("x-h264uc", "x-rtvc1", "x-ulpfecuc", "x-caps", "x-ssrc-range", "x-source",
             "label", "x-mediabw", "mst-mode", "silk", "ice-ufrag", "crypto")


async def test_lync_video_reaches_the_phone_as_h264_and_lync_gets_x_h264uc_back(
        tmp_path: Path) -> None:
    """Lync 2013's X-H264UC + x-rtvc1 video: the phone is offered H264 (Lync's number,
    packetization-mode 1, constrained baseline at level 4 because Lync's x-caps go to
    1080p30, b=AS at Lync's usual 4000, PLI, FIR and TMMBR feedback) and nothing Lync-only;
    its H264 answer at level 3.1, b=AS 1500 and `rtcp-fb:* ccm tmmbr` makes our answer to
    Lync accept X-H264UC alone with Lync's attributes (our SSRC range, x-caps up to 720p at
    1500 kbps); the relay gets the VideoPlan (the phone takes TMMBR, so Lync's bandwidth
    requests reach it), and the CDR says video was negotiated at 1280x720 and ICE ran on
    both streams, though no frame came either way."""
    h, ports, cdrs, lync, camera, video_key = await lync_with_camera(tmp_path)
    h.feed(invite(lync_offer(lync, os.urandom(30), lync_video(camera, video_key))), LYNC)
    for _ in range(30):
        await h.settle()
    out, peer = outbound(h.take(), "INVITE")
    audio, video = parse_sdp(out.body).media
    assert audio.formats == ["9", "0", "101"] and video.formats == ["122"]
    assert video.rtpmaps()[122].encoding == "H264" and video.proto == "RTP/AVP"
    assert video.fmtp(122) == "profile-level-id=42e028;packetization-mode=1"
    assert video.attributes("rtcp-fb") == ["122 nack pli", "122 ccm fir", "122 ccm tmmbr"]
    assert video.bandwidth("AS") == 4000
    assert not [word for word in LYNC_ONLY if word in out.body.decode().lower()]
    phone = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
             b"m=audio 5004 RTP/AVP 9\r\na=rtpmap:9 G722/8000\r\n" + PHONE_VIDEO
             + b"a=rtcp-fb:* ccm tmmbr\r\n")
    h.feed(make_response(out, 200, to_tag="phone", headers=(("Contact", "<sip:p@127.0.0.1>"),),
                         body=phone, content_type="application/sdp"), peer)
    ok = next(m for m, p in h.take() if isinstance(m, Response) and m.status == 200 and p == LYNC)
    ours_audio, ours_video, sharing = parse_sdp(ok.body).media
    assert sharing.rejected and ours_video.formats == ["122"] and ours_video.proto == "RTP/SAVP"
    assert ours_video.rtpmaps()[122].encoding == "X-H264UC"
    assert ours_video.fmtp(122) == "packetization-mode=1;mst-mode=NI-TC"
    assert ours_video.attribute("rtcp-fb") == "* x-message app send:src,x-pli recv:src,x-pli"
    assert ours_video.has("rtcp-rsize") and ours_video.label == "main-video"
    assert ours_video.attribute("x-mediabw") == "main-video send=1500;recv=1500"
    assert (ours_video.attribute("x-caps") or "").startswith("122 263:1280:720:30.0:1500000:1;")
    ours = ours_video.ssrc_range()
    assert ours is not None and ours.last - ours.first == 99
    [call] = h.b2bua.calls.values()
    assert isinstance(call.media, LyncCaller)
    assert call.media.videos == {1: VideoPlan(
        122, 96, SipVideoLimits(1280, 720, 30.0, 1500000), lync_ssrc_range=LYNC_VIDEO_SSRCS,
        lync_takes_vsr=True, lync_send_ssrc=ours.first, sip_takes_tmmbr=True)}
    await ice_completes(h, (lync, ours_audio), (camera, ours_video))
    assert call.media.video.startswith(NO_FRAMES % "1280x720")
    h.feed(bye_from_lync(str(ok.to.tag)), LYNC)
    for _ in range(10):
        await h.settle()
    [row] = cdrs.recent()
    assert str(row["video"]).startswith(NO_FRAMES % "1280x720")
    cdrs.close()
    await asyncio.gather(lync.close(), camera.close())
    assert ports.in_use == set()


@pytest.fixture(scope="module")
def x264(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[bytes]]:
    return source_video(tmp_path_factory)


@dataclass
class VideoCall:
    """A Lync caller's call with video to a phone, answered, ICE up on both streams."""

    h: Harness
    ports: PortAllocator
    cdrs: CdrStore
    lync: aioice.Connection
    camera: aioice.Connection
    camera_key: bytes
    lync_sdp: bytes  # the RFC 5245 part of Lync's offer
    out: Request  # our INVITE to the phone
    phone: Peer  # where it went
    phone_sdp: bytes  # the phone's answer
    ok: Response  # our 200 to Lync
    call: Call
    phone_video: asyncio.DatagramTransport
    phone_rx: Phone

    @property
    def from_lync(self) -> dict[str, str]:
        return leg("lync-call-1", "lync", self.ok.to.tag, "TLS 127.0.0.1:5061")

    @property
    def from_phone(self) -> dict[str, str]:
        return leg(self.out.call_id, "phone", self.out.from_.tag, "UDP 198.51.100.1:5060")

    async def end(self) -> dict[str, object]:
        """Lync hangs up; the CDR, once every port is back."""
        self.h.feed(bye_from_lync(str(self.ok.to.tag)), LYNC)
        for _ in range(10):
            await self.h.settle()
        [row] = self.cdrs.recent()
        self.cdrs.close()
        await asyncio.gather(self.lync.close(), self.camera.close())
        self.phone_video.close()
        assert self.ports.in_use == set()
        return row


async def lync_with_camera(tmp_path: Path) -> tuple[
        Harness, PortAllocator, CdrStore, aioice.Connection, aioice.Connection, bytes]:
    """A harness writing CDRs, and Lync's ICE agents for audio and for video (gathered)
    with the video's SRTP key."""
    base = free_port()
    ports = PortAllocator(base, base + 40)
    lync = aioice.Connection(ice_controlling=True, components=1, use_ipv6=False)
    camera = aioice.Connection(ice_controlling=True, components=1, use_ipv6=False)
    await asyncio.gather(lync.gather_candidates(), camera.gather_candidates())
    cdrs = CdrStore(tmp_path / "cdr.sqlite3")
    h = Harness([FIRST], cdrs, ports=ports, address="127.0.0.1")
    return h, ports, cdrs, lync, camera, os.urandom(30)


async def video_call(tmp_path: Path, *, phone_takes_video: bool = True) -> VideoCall:
    """Lync calls with audio and X-H264UC; the phone answers H264 (not
    `phone_takes_video`: video at port 0); ICE runs on what was taken."""
    h, ports, cdrs, lync, camera, camera_key = await lync_with_camera(tmp_path)
    offer = invite(lync_offer(lync, os.urandom(30), lync_video(camera, camera_key)))
    h.feed(offer, LYNC)
    for _ in range(30):
        await h.settle()
    out, peer = outbound(h.take(), "INVITE")
    phone_video, phone_rx, phone_port = await phone()
    answer = phone_answer(5004, PHONE_VIDEO.replace(b"5006", b"%d" % phone_port)
                          if phone_takes_video else b"m=video 0 RTP/AVP 122\r\n")
    h.feed(make_response(out, 200, to_tag="phone", headers=(("Contact", "<sip:p@127.0.0.1>"),),
                         body=answer, content_type="application/sdp"), peer)
    ok = next(m for m, p in h.take() if isinstance(m, Response) and m.status == 200 and p == LYNC)
    ours_audio, ours_video, _ = parse_sdp(ok.body).media
    await ice_completes(h, (lync, ours_audio), *([(camera, ours_video)] if phone_takes_video
                                                 else []))
    [call] = h.b2bua.calls.values()
    lync_sdp = pick_sdp(split(offer.split(b"\r\n\r\n", 1)[1], BOUNDARY)).body
    return VideoCall(h, ports, cdrs, lync, camera, camera_key, lync_sdp, out, peer, answer, ok,
                     call, phone_video, phone_rx)


async def test_video_flows_through_the_call_both_ways_frame_for_frame(
        tmp_path: Path, x264: tuple[Path, list[bytes]]) -> None:
    """A whole call: a Lync caller (ICE, SRTP) with X-H264UC video calls a phone answering
    H264. x264's packets the phone sends reach Lync as [MS-H264PF] that decodes (test-side
    receiver, ffmpeg) to the source's frames; Lync's [MS-H264PF] (test-side sender: PACSI,
    prefix units) reaches the phone as RFC 6184 that decodes (GStreamer, ffmpeg) to them
    too; none lost. Lync got a VSR for what the phone's answer allows; the CDR's video
    column says what flowed: sizes from the SPS, frames and key frames, VSRs."""
    tmp, source = x264
    v = await video_call(tmp_path)
    assert isinstance(v.call.media, LyncCaller)
    at_lync = LyncStream(v.camera, v.camera_key, parse_sdp(v.ok.body).media[1])
    gateway = ("127.0.0.1", v.call.media.sip_ports[1])

    async def from_phone(packet: bytes) -> None:
        v.phone_video.sendto(packet, gateway)

    lync_ssrc = LYNC_VIDEO_SSRCS[0] + 7  # any of its x-ssrc-range
    await asyncio.gather(paced(from_phone, source), paced(at_lync.send, lync_packets(
        source, ssrc=lync_ssrc, payload_type=122)))
    stats = await video_relayed(v.call, 60)
    at_phone = v.phone_rx.rtp()
    expected = frames(tmp, source, "source")
    assert len(expected) == 60
    assert lync_frames(tmp_path, at_lync.rtp, "at_lync") == expected
    assert frames(tmp_path, at_phone, "at_phone") == expected
    assert {p[1] & 0x7F for p in at_lync.rtp} == {122} and {p[1] & 0x7F for p in at_phone} == {96}
    assert stats["vsr_sent"] >= 1 and stats["vsr_received"] == 0
    await at_lync.close()
    row = await v.end()
    assert row["video"] == (f"up: from Lync 640x360 60 frames (2 key), to Lync 640x360 60 "
                            f"frames (2 key); VSRs {stats['vsr_sent']} sent, 0 received")


async def video_removed(v: VideoCall, by: str) -> None:
    """On the video call `v`, Lync (`by`) or the phone re-INVITEs with the video stream
    rejected: the other leg gets our description with video rejected and the audio as it
    was (next o= version), its answer comes back to the offerer as ours with video
    rejected, and the video's ICE port toward Lync and its RTP and RTCP ports toward the
    phone are freed (on return)."""
    h = v.h
    held = len(v.ports.in_use)
    first_lync, first_phone = parse_sdp(v.ok.body), parse_sdp(v.out.body)
    if by == "lync":
        offer, asker, other, before = without_video(v.lync_sdp, b"2"), LYNC, v.phone, first_phone
        h.feed(in_dialog("INVITE", 2, offer, **v.from_lync), LYNC)
    else:
        offer, asker, other, before = without_video(v.phone_sdp, b"2"), v.phone, LYNC, first_lync
        h.feed(in_dialog("INVITE", 2, offer, **v.from_phone), v.phone)
    [(reinvite, peer)] = [(m, p) for m, p in h.take()
                          if isinstance(m, Request) and m.method == "INVITE"]
    assert peer == other
    offered = parse_sdp(reinvite.body)
    assert offered.origin[2] == str(int(before.origin[2]) + 1)
    assert [(m.media, m.port) for m in offered.media if m.media != "applicationsharing"] == [
        ("audio", before.media[0].port), ("video", 0)]
    assert offered.media[0].formats == before.media[0].formats
    assert offered.media[0].attribute("ice-ufrag") == before.media[0].attribute("ice-ufrag")
    answer = without_video(v.lync_sdp if by == "phone" else v.phone_sdp, b"3")
    ours = answered_back(h, reinvite, answer, other, asker, 2)
    assert [m.port == 0 for m in ours.media if m.media == "video"] == [True]
    assert not ours.media[0].rejected
    assert isinstance(v.call.media, LyncCaller)
    video_ports = {v.call.media.sip_ports[1], v.call.media.sip_ports[1] + 1}  # RTP, RTCP
    for _ in range(20):
        await h.settle()
        if len(v.ports.in_use) <= held - 3:
            break
    # The video's ICE port toward Lync, and its RTP and RTCP ports toward the phone.
    assert len(v.ports.in_use) == held - 3 and not video_ports & v.ports.in_use


@pytest.mark.parametrize("by", ["lync", "phone"])
async def test_video_removed_mid_call_by_either_side_stops_on_both(
        tmp_path: Path, by: str) -> None:
    """A re-INVITE that rejects the video stream (port 0), from Lync or from the phone,
    crosses to the other leg and comes back as our answer with video rejected; the video
    stream's ICE session toward Lync closes and its relay stops (its ports are free), the
    audio goes on, and the CDR says who removed video."""
    v = await video_call(tmp_path)
    await video_removed(v, by)
    assert v.call.media.relayed is not None and v.call in v.h.b2bua.calls.values()
    row = await v.end()
    party = "caller" if by == "lync" else "callee"
    assert str(row["video"]).startswith("not up: no frames either way (1280x720 negotiated)")
    assert str(row["video"]).endswith(f"; video removed mid-call by the {party}")


def with_camera(lync_sdp: bytes, video: str, version: bytes) -> bytes:
    """Lync's description `lync_sdp` at o= `version` with `video` (lync_video) as its
    m=video section."""
    return re.sub(rb"(o=- \d+) \d+", rb"\1 " + version, re.sub(
        rb"m=video .*?(?=m=applicationsharing)", video.encode(), lync_sdp, flags=re.S),
        count=1)


@pytest.mark.parametrize(("removed_by", "offered_by"), [
    ("lync", "lync"), ("phone", "lync"), ("phone", "phone"), ("lync", "phone"),
    ("phone's answer", "phone")])
async def test_video_offered_again_where_it_was_removed_flows_both_ways(
        tmp_path: Path, x264: tuple[Path, list[bytes]], removed_by: str,
        offered_by: str) -> None:
    """Video removed mid-call (port 0) by either, or declined in the phone's answer, then
    offered again at that same m= line (RFC 3264 8.1 reuse, as Lync does when its camera
    starts again) by Lync or by the phone: taken up as added video is, at m= line 1 on
    both legs. Lync offering: the phone is re-offered
    H264 there at a new relay port and its answer makes ours accept X-H264UC with our
    candidates and key. The phone offering: Lync is re-offered X-H264UC there with our
    candidates and key, and its answer makes ours answer the phone's H264 at a new relay
    port. Lync controls ICE, the relay joins the stream, frames flow both ways frame for
    frame (x264 source, ffmpeg the judge), the CDR has the removed stream's account and
    the new one's saying video was up, and every port goes at the end."""
    v = await video_call(tmp_path, phone_takes_video=removed_by != "phone's answer")
    if removed_by != "phone's answer":
        await video_removed(v, removed_by)
    h = v.h
    assert isinstance(v.call.media, LyncCaller)
    phone_sdp = re.sub(rb"(o=- \d+) \d+", rb"\1 4", phone_answer(5004, PHONE_VIDEO.replace(
        b"5006", b"%d" % v.phone_video.get_extra_info("sockname")[1])))
    removed_port = v.call.media.sip_ports[1]
    camera = aioice.Connection(ice_controlling=True, components=1, use_ipv6=False)
    await camera.gather_candidates()
    camera_key = os.urandom(30)
    if offered_by == "lync":
        reinvite, offered = await reoffered(h, 3, with_camera(
            v.lync_sdp, lync_video(camera, camera_key), b"4"), v.from_lync, LYNC,
            v.out.call_id)  # once ICE has gathered for the stream
        to_phone = offered.media[1]
        assert to_phone.formats == ["122"] and to_phone.rtpmaps()[122].encoding == "H264"
        ours = answered_back(h, reinvite, phone_sdp, v.phone, LYNC, 3)
        to_lync, phone_sends_to = ours.media[1], to_phone.port
    else:
        reinvite, offered = await reoffered(h, 3, phone_sdp, v.from_phone, v.phone,
                                            "lync-call-1")
        to_lync = offered.media[1]
        [our_key] = to_lync.cryptos()
        answer = with_camera(v.lync_sdp, lync_video(camera, camera_key).replace(
            " 122 121 123", " 122").replace("a=crypto:2 ", f"a=crypto:{our_key.tag} "), b"4")
        ours = answered_back(h, reinvite, answer.replace(b"m=applicationsharing 5398",
                                                         b"m=applicationsharing 0"),
                             LYNC, v.phone, 3)
        phone_sends_to = ours.media[1].port
        assert ours.media[1].rtpmaps()[96].encoding == "H264"
    assert [(m.media, m.rejected) for m in offered.media if m.media != "applicationsharing"
            ] == [("audio", False), ("video", False)]
    assert [(m.media, m.rejected) for m in ours.media if m.media != "applicationsharing"
            ] == [("audio", False), ("video", False)]
    assert to_lync.rtpmaps()[122].encoding == "X-H264UC" and to_lync.cryptos()
    assert to_lync.attribute("ice-ufrag") and to_lync.attributes("candidate")
    assert phone_sends_to not in (0, removed_port)
    await ice_connects(camera, to_lync)
    for _ in range(100):
        if len(v.call.media.relayed.video_stats() if v.call.media.relayed else ()) == 2:
            break
        await asyncio.sleep(0.02)
    at_lync = LyncStream(camera, camera_key, to_lync)
    stats = await video_crosses(v.call, at_lync, LYNC_VIDEO_SSRCS[0], v.phone_video,
                                v.phone_rx, phone_sends_to, x264, tmp_path)
    await at_lync.close()
    row = await v.end()
    *removed, again = str(row["video"]).split(" | ")
    if removed_by == "phone's answer":
        assert removed == []
    else:
        [account] = removed
        assert account.startswith("not up: no frames either way (1280x720 negotiated)")
        assert account.endswith(
            f"; video removed mid-call by the {'caller' if removed_by == 'lync' else 'callee'}")
    assert again == (f"up: from Lync 640x360 60 frames (2 key), to Lync 640x360 60 frames "
                     f"(2 key); VSRs {stats['vsr_sent']} sent, 0 received")


async def test_video_offered_again_that_the_phone_declines_is_rejected_and_not_retried(
        tmp_path: Path) -> None:
    """Video removed mid-call by Lync, then offered again by Lync at its old m= line: the
    phone declining our H264 re-offer (port 0) makes our 200 to Lync reject the line
    (audio as it was); the stream's new ICE session and relay port go back, the CDR keeps
    the removed stream's account, and the same offer again (a refresh) is answered here
    with the phone not asked."""
    v = await video_call(tmp_path)
    await video_removed(v, "lync")
    h, held = v.h, set(v.ports.in_use)
    camera = aioice.Connection(ice_controlling=True, components=1, use_ipv6=False)
    await camera.gather_candidates()
    again = with_camera(v.lync_sdp, lync_video(camera, os.urandom(30)), b"4")
    reinvite, offered = await reoffered(h, 3, again, v.from_lync, LYNC, v.out.call_id)
    assert [(m.media, m.rejected) for m in offered.media] == [("audio", False),
                                                              ("video", False)]
    ours = answered_back(h, reinvite, without_video(v.phone_sdp, b"4"), v.phone, LYNC, 3)
    assert [(m.media, m.rejected) for m in ours.media] == [
        ("audio", False), ("video", True), ("applicationsharing", True)]
    assert ours.media[0].lines == parse_sdp(v.ok.body).media[0].lines
    await h.ports_back(v.ports, held)
    h.feed(in_dialog("INVITE", 4, again, **v.from_lync), LYNC)
    sent = h.take()
    assert not [m for m, _ in sent if isinstance(m, Request)]  # the phone is not asked
    [refreshed] = [m for m, _ in sent if isinstance(m, Response) and m.status == 200]
    assert refreshed.body == v.call.caller.sdp_to
    assert [m.rejected for m in parse_sdp(refreshed.body).media if m.media == "video"] == [
        True]
    await camera.close()
    row = await v.end()
    assert " | " not in str(row["video"]) and str(row["video"]).endswith(
        "; video removed mid-call by the caller")


async def test_lync_changing_the_codecs_of_video_refused_at_set_up_is_declined() -> None:
    """Lync's x-rtvc1-only video is refused when the call is set up, so the phone's
    description has no video line; X-H264UC Lync offers later on that old m= line, which
    Lync never rejected, restates its stream with other codecs (not a rejected line offered
    again): answered here as before, video rejected, the phone not asked, and the call goes
    on."""
    base = free_port()
    ports = PortAllocator(base, base + 40)
    h = Harness([FIRST], ports=ports, address="127.0.0.1")
    lync = aioice.Connection(ice_controlling=True, components=1, use_ipv6=False)
    camera = aioice.Connection(ice_controlling=True, components=1, use_ipv6=False)
    await asyncio.gather(lync.gather_candidates(), camera.gather_candidates())
    offer = invite(lync_offer(lync, os.urandom(30), lync_video(camera, os.urandom(30),
                                                                rtvc1_only=True)))
    h.feed(offer, LYNC)
    for _ in range(30):
        await h.settle()
    out, peer = outbound(h.take(), "INVITE")
    assert [m.media for m in parse_sdp(out.body).media] == ["audio"]
    h.feed(make_response(out, 200, to_tag="phone", headers=(("Contact", "<sip:p@127.0.0.1>"),),
                         body=phone_answer(5004), content_type="application/sdp"), peer)
    ok = next(m for m, p in h.take() if isinstance(m, Response) and m.status == 200)
    await ice_completes(h, (lync, parse_sdp(ok.body).media[0]))
    held = set(ports.in_use)
    lync_part = pick_sdp(split(offer.split(b"\r\n\r\n", 1)[1], BOUNDARY)).body
    again = with_camera(lync_part, lync_video(camera, os.urandom(30)), b"2")
    h.feed(in_dialog("INVITE", 2, again, call_id="lync-call-1", from_tag="lync",
                     to_tag=str(ok.to.tag), via="TLS 127.0.0.1:5061"), LYNC)
    sent = h.take()
    assert not [m for m, _ in sent if isinstance(m, Request)]  # the phone is not asked
    [answered] = [m for m, _ in sent if isinstance(m, Response) and m.status == 200]
    assert [(m.media, m.rejected) for m in parse_sdp(answered.body).media] == [
        ("audio", False), ("video", True), ("applicationsharing", True)]
    [call] = h.b2bua.calls.values()
    assert ports.in_use == held and call.media.video == (
        "refused: x-rtvc1 only (RTVideo needs transcoding)")
    await call.media.close()
    await asyncio.gather(lync.close(), camera.close())
    assert ports.in_use == set()


async def camera_crosses(call: Call, camera: aioice.Connection, camera_key: bytes,
                         to_lync: Media, phone_video: asyncio.DatagramTransport,
                         phone_rx: Phone, to_port: int, x264: tuple[Path, list[bytes]],
                         tmp_path: Path) -> dict[str, Any]:
    """Video taken up mid-call: Lync's camera agent runs ICE against our X-H264UC line
    `to_lync`, the relay joins the stream, then frames cross both ways (`video_crosses`)."""
    await ice_connects(camera, to_lync)
    for _ in range(100):
        if call.media.relayed is not None and call.media.relayed.video_stats():
            break
        await asyncio.sleep(0.02)
    at_lync = LyncStream(camera, camera_key, to_lync)
    stats = await video_crosses(call, at_lync, LYNC_VIDEO_SSRCS[0], phone_video, phone_rx,
                                to_port, x264, tmp_path)
    await at_lync.close()
    return stats


async def test_video_offered_again_on_a_line_the_phone_never_had_is_added_toward_it(
        tmp_path: Path, x264: tuple[Path, list[bytes]]) -> None:
    """Lync calls with its video line rejected (port 0: no camera yet), so the phone's
    description has no video line. X-H264UC that Lync offers later on that m= line (1 of
    Lync's 3, RFC 3264 8.1 reuse) is added toward the phone as a new m= line after its
    others (lines are added at the end; here, after the audio), H264 at a new relay port;
    the phone's answer makes ours accept X-H264UC on Lync's line 1, frames flow both ways
    frame for frame, and the CDR says video was up."""
    h, ports, cdrs, lync, camera, camera_key = await lync_with_camera(tmp_path)
    offer = invite(lync_offer(lync, os.urandom(30), "m=video 0 RTP/SAVP 122\r\n"))
    h.feed(offer, LYNC)
    for _ in range(30):
        await h.settle()
    out, peer = outbound(h.take(), "INVITE")
    assert [m.media for m in parse_sdp(out.body).media] == ["audio"]
    phone_video, phone_rx, phone_port = await phone()
    audio_only = phone_answer(5004)
    h.feed(make_response(out, 200, to_tag="phone", headers=(("Contact", "<sip:p@127.0.0.1>"),),
                         body=audio_only, content_type="application/sdp"), peer)
    ok = next(m for m, p in h.take() if isinstance(m, Response) and m.status == 200)
    await ice_completes(h, (lync, parse_sdp(ok.body).media[0]))
    [call] = h.b2bua.calls.values()
    assert isinstance(call.media, LyncCaller) and call.media.sip_lines == [0]
    lync_part = pick_sdp(split(offer.split(b"\r\n\r\n", 1)[1], BOUNDARY)).body
    again = with_camera(lync_part, lync_video(camera, camera_key), b"2")
    from_lync = leg("lync-call-1", "lync", ok.to.tag, "TLS 127.0.0.1:5061")
    reinvite, offered = await reoffered(h, 2, again, from_lync, LYNC, out.call_id)
    before = parse_sdp(out.body)
    assert offered.origin[2] == str(int(before.origin[2]) + 1)
    assert offered.media[0].lines == before.media[0].lines  # audio as it was
    [_, to_phone] = offered.media
    assert to_phone.formats == ["122"] and to_phone.rtpmaps()[122].encoding == "H264"
    assert to_phone.port not in (0, offered.media[0].port)
    assert call.media.sip_lines == [0, 1]
    phone_sdp = (audio_only.replace(b"o=- 1 1", b"o=- 1 2")
                 + PHONE_VIDEO.replace(b"5006", b"%d" % phone_port))
    ours = answered_back(h, reinvite, phone_sdp, peer, LYNC, 2)
    assert [(m.media, m.rejected) for m in ours.media] == [
        ("audio", False), ("video", False), ("applicationsharing", True)]
    assert ours.media[0].lines == parse_sdp(ok.body).media[0].lines
    to_lync = ours.media[1]
    assert to_lync.rtpmaps()[122].encoding == "X-H264UC" and to_lync.cryptos()
    assert to_lync.attribute("ice-ufrag") and to_lync.attributes("candidate")
    stats = await camera_crosses(call, camera, camera_key, to_lync, phone_video, phone_rx,
                                 to_phone.port, x264, tmp_path)
    v = VideoCall(h, ports, cdrs, lync, camera, camera_key, again, out, peer, phone_sdp, ok,
                  call, phone_video, phone_rx)
    row = await v.end()
    assert row["video"] == (f"up: from Lync 640x360 60 frames (2 key), to Lync 640x360 60 "
                            f"frames (2 key); VSRs {stats['vsr_sent']} sent, 0 received")


async def test_a_lync_hold_restating_video_the_phone_declined_is_a_hold(
        tmp_path: Path) -> None:
    """Lync offered video and the phone declined it (our answer rejects the line); Lync's
    hold re-offer still offering that video as before is a hold, not video offered again:
    the phone gets at once the description it last had from us with a=sendonly, no port
    is taken, and its answer comes back to Lync as ours, video still rejected."""
    v = await video_call(tmp_path, phone_takes_video=False)
    h, held = v.h, set(v.ports.in_use)
    hold = re.sub(rb"(o=- \d+) \d+", rb"\1 2", v.lync_sdp).replace(
        b"a=label:main-audio\r\n", b"a=label:main-audio\r\na=sendonly\r\n")
    h.feed(in_dialog("INVITE", 2, hold, **v.from_lync), LYNC)
    # At once (video taken up would first gather ICE for it), and no port taken.
    [(reinvite, to_phone)] = [(m, p) for m, p in h.take()
                              if isinstance(m, Request) and m.method == "INVITE"]
    assert to_phone == v.phone and v.ports.in_use == held
    offered = parse_sdp(reinvite.body)
    assert offered.media[0].direction == "sendonly"
    assert offered.media[1].port == parse_sdp(v.out.body).media[1].port  # as it last had it
    ours = answered_back(h, reinvite, phone_answer(5004, b"a=recvonly\r\nm=video 0 RTP/AVP "
                                                   b"122\r\n").replace(b"o=- 1 1", b"o=- 1 2"),
                         v.phone, LYNC, 2)
    assert [(m.media, m.rejected) for m in ours.media] == [
        ("audio", False), ("video", True), ("applicationsharing", True)]
    assert ours.media[0].direction == "recvonly"
    await v.end()


@pytest.mark.parametrize(("rtvc1_only", "phone_video", "why"), [
    (True, b"", "x-rtvc1 only (RTVideo needs transcoding)"),
    (False, b"m=video 0 RTP/AVP 122\r\n", "the SIP side declined video"),
    (False, b"m=video 5006 RTP/AVP 122\r\na=rtpmap:122 H264/90000\r\n",
     "the SIP side answered no H264 with packetization-mode=1"),
], ids=["x-rtvc1 only", "phone declines", "phone answers mode 0"])
async def test_video_that_cannot_be_translated_is_refused_and_the_cdr_says_why(
        tmp_path: Path, rtvc1_only: bool, phone_video: bytes, why: str) -> None:
    """Lync's video is rejected in our answer (port 0) and the call goes on with audio: an
    x-rtvc1-only offer never reaches the phone; a phone that declines video or answers H264
    without packetization-mode 1 has nothing to translate to. The CDR's video column says
    why."""
    base = free_port()
    ports = PortAllocator(base, base + 40)
    lync = aioice.Connection(ice_controlling=True, components=1, use_ipv6=False)
    camera = aioice.Connection(ice_controlling=True, components=1, use_ipv6=False)
    await asyncio.gather(lync.gather_candidates(), camera.gather_candidates())
    cdrs = CdrStore(tmp_path / "cdr.sqlite3")
    h = Harness([FIRST], cdrs, ports=ports, address="127.0.0.1")
    video = lync_video(camera, os.urandom(30), rtvc1_only=rtvc1_only)
    h.feed(invite(lync_offer(lync, os.urandom(30), video)), LYNC)
    for _ in range(30):
        await h.settle()
    out, peer = outbound(h.take(), "INVITE")
    kinds = [m.media for m in parse_sdp(out.body).media]
    assert kinds == (["audio"] if rtvc1_only else ["audio", "video"])
    phone = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
             b"m=audio 5004 RTP/AVP 9\r\na=rtpmap:9 G722/8000\r\n" + phone_video)
    h.feed(make_response(out, 200, to_tag="phone", headers=(("Contact", "<sip:p@127.0.0.1>"),),
                         body=phone, content_type="application/sdp"), peer)
    ok = next(m for m, p in h.take() if isinstance(m, Response) and m.status == 200 and p == LYNC)
    ours_audio, ours_video, _ = parse_sdp(ok.body).media
    assert ours_video.rejected and not ours_audio.rejected
    [call] = h.b2bua.calls.values()
    assert isinstance(call.media, LyncCaller) and call.media.videos == {}
    assert call.media.video == f"refused: {why}"
    h.feed(bye_from_lync(str(ok.to.tag)), LYNC)
    for _ in range(10):
        await h.settle()
    assert cdrs.recent()[0]["video"] == f"refused: {why}"
    cdrs.close()
    await asyncio.gather(lync.close(), camera.close())
    assert ports.in_use == set()


async def audio_call_from_lync(h: Harness, lync: aioice.Connection
                               ) -> tuple[bytes, Request, Peer, Response]:
    """Lync (audio on `lync`) calls the phone, which answers audio at 5004; ICE up. (Lync's
    INVITE, ours to the phone and where it went, our 200 to Lync.)"""
    offer = invite(lync_offer(lync, os.urandom(30)))
    h.feed(offer, LYNC)
    for _ in range(30):
        await h.settle()
    out, peer = outbound(h.take(), "INVITE")
    h.feed(make_response(out, 200, to_tag="phone", headers=(("Contact", "<sip:p@127.0.0.1>"),),
                         body=phone_answer(5004), content_type="application/sdp"), peer)
    ok = next(m for m, p in h.take() if isinstance(m, Response) and m.status == 200)
    await ice_completes(h, (lync, parse_sdp(ok.body).media[0]))
    return offer, out, peer, ok


async def added_video_call(tmp_path: Path) -> VideoCall:
    """An audio call from Lync to a phone, ICE up; then Lync adds X-H264UC video by
    re-INVITE: the phone is re-offered H264 at a new relay port (audio as it was, next o=
    version), answers it, and Lync's 200 accepts video with our candidates and key; ICE
    runs for the new stream and the relay joins it. Returned as a video call."""
    h, ports, cdrs, lync, camera, camera_key = await lync_with_camera(tmp_path)
    offer = invite(lync_offer(lync, os.urandom(30)))
    h.feed(offer, LYNC)
    for _ in range(30):
        await h.settle()
    out, peer = outbound(h.take(), "INVITE")
    phone_video, phone_rx, phone_port = await phone()
    audio_only = phone_answer(5004)
    h.feed(make_response(out, 200, to_tag="phone", headers=(("Contact", "<sip:p@127.0.0.1>"),),
                         body=audio_only, content_type="application/sdp"), peer)
    ok = next(m for m, p in h.take() if isinstance(m, Response) and m.status == 200)
    first = parse_sdp(ok.body)
    await ice_completes(h, (lync, first.media[0]))
    [call] = h.b2bua.calls.values()
    lync_sdp = (pick_sdp(split(offer.split(b"\r\n\r\n", 1)[1], BOUNDARY)).body
                .replace(b"o=- 0 1", b"o=- 0 2") + lync_video(camera, camera_key).encode())
    from_lync = {"call_id": "lync-call-1", "from_tag": "lync", "to_tag": str(ok.to.tag),
                 "via": "TLS 127.0.0.1:5061"}
    h.feed(in_dialog("INVITE", 2, lync_sdp, **from_lync), LYNC)
    reinvite = await our_reinvite(h)  # once ICE has gathered for the new stream
    assert reinvite.call_id == out.call_id
    before, offered = parse_sdp(out.body), parse_sdp(reinvite.body)
    assert offered.origin[2] == str(int(before.origin[2]) + 1)
    assert offered.media[0].lines == before.media[0].lines  # audio as it was
    video = offered.media[1]
    assert video.formats == ["122"] and video.rtpmaps()[122].encoding == "H264"
    assert video.fmtp(122) == "profile-level-id=42e028;packetization-mode=1"
    assert video.port not in (0, offered.media[0].port)
    phone_sdp = (audio_only.replace(b"o=- 1 1", b"o=- 1 2")
                 + PHONE_VIDEO.replace(b"5006", b"%d" % phone_port))
    ours = answered_back(h, reinvite, phone_sdp, peer, LYNC, 2)
    assert ours.origin[2] == str(int(first.origin[2]) + 1)
    assert [(m.media, m.rejected) for m in ours.media] == [
        ("audio", False), ("applicationsharing", True), ("video", False)]
    assert ours.media[0].lines == first.media[0].lines
    ours_video = ours.media[2]
    assert ours_video.rtpmaps()[122].encoding == "X-H264UC" and ours_video.cryptos()
    assert ours_video.attribute("ice-ufrag") and ours_video.attributes("candidate")
    await ice_connects(camera, ours_video)
    for _ in range(100):
        if call.media.relayed is not None and call.media.relayed.video_stats():
            break
        await asyncio.sleep(0.02)
    return VideoCall(h, ports, cdrs, lync, camera, camera_key, lync_sdp, out, peer, phone_sdp,
                     ok, call, phone_video, phone_rx)


async def test_video_lync_adds_mid_call_flows_both_ways_and_can_be_removed(
        tmp_path: Path, x264: tuple[Path, list[bytes]]) -> None:
    """An audio call to which Lync adds video (its camera started): ICE gathered for the
    new stream, the phone re-offered H264 at a new relay port, Lync's answer accepting
    X-H264UC with our candidates and key, ICE run for it, the stream joined to the
    running relay. Then frames flow both ways, frame for frame (x264 source, ffmpeg as the
    judge), Lync's remote-candidates re-INVITE is answered as a refresh, Lync removing the
    video again frees its ports, and the CDR says video was up."""
    v = await added_video_call(tmp_path)
    assert isinstance(v.call.media, LyncCaller)
    held = len(v.ports.in_use)
    ours = v.call.caller.sdp_to  # what Lync last got from us: video accepted
    at_lync = LyncStream(v.camera, v.camera_key, parse_sdp(ours).media[2])
    stats = await video_crosses(v.call, at_lync, LYNC_VIDEO_SSRCS[0], v.phone_video,
                                v.phone_rx, v.call.media.sip_ports[1], x264, tmp_path)
    await at_lync.close()
    # Lync's second offer (remote candidates) for the new stream: a refresh, answered here.
    candidates = re.sub(rb"(o=- \d+) \d+", rb"\1 3", v.lync_sdp)
    v.h.feed(in_dialog("INVITE", 3, candidates, **v.from_lync), LYNC)
    sent = v.h.take()
    assert not [m for m, _ in sent if isinstance(m, Request)]
    [refreshed] = [m for m, _ in sent if isinstance(m, Response) and m.status == 200]
    assert refreshed.body == ours
    # Removed again by Lync: the phone is re-offered video rejected; the ports go.
    video_ports = {v.call.media.sip_ports[1], v.call.media.sip_ports[1] + 1}
    v.h.feed(in_dialog("INVITE", 4, without_video(v.lync_sdp, b"4"), **v.from_lync), LYNC)
    [(reinvite, peer)] = [(m, p) for m, p in v.h.take()
                          if isinstance(m, Request) and m.method == "INVITE"]
    assert [(m.media, m.port == 0) for m in parse_sdp(reinvite.body).media] == [
        ("audio", False), ("video", True)]
    answered_back(v.h, reinvite, without_video(v.phone_sdp, b"3"), peer, LYNC, 4)
    for _ in range(20):
        await v.h.settle()
        if len(v.ports.in_use) <= held - 3:
            break
    assert len(v.ports.in_use) == held - 3 and not video_ports & v.ports.in_use
    row = await v.end()
    assert row["video"] == (f"up: from Lync 640x360 60 frames (2 key), to Lync 640x360 60 "
                            f"frames (2 key); VSRs {stats['vsr_sent']} sent, 0 received; "
                            f"video removed mid-call by the caller")


async def test_video_lync_adds_that_cannot_be_translated_is_declined() -> None:
    """An audio call to which Lync adds x-rtvc1-only video by re-INVITE: answered here with
    the video stream rejected (port 0) and the audio as it was, next o= version, the phone
    not asked; the same re-offer again (a refresh) gets the same answer, unchanged."""
    base = free_port()
    h = Harness([FIRST], ports=PortAllocator(base, base + 40), address="127.0.0.1")
    lync = aioice.Connection(ice_controlling=True, components=1, use_ipv6=False)
    camera = aioice.Connection(ice_controlling=True, components=1, use_ipv6=False)
    await asyncio.gather(lync.gather_candidates(), camera.gather_candidates())
    offer, _, _, ok = await audio_call_from_lync(h, lync)
    first = parse_sdp(ok.body)
    lync_part = pick_sdp(split(offer.split(b"\r\n\r\n", 1)[1], BOUNDARY)).body
    with_video = (lync_part.replace(b"o=- 0 1", b"o=- 0 2")
                  + lync_video(camera, os.urandom(30), rtvc1_only=True).encode())
    from_lync = {"call_id": "lync-call-1", "from_tag": "lync", "to_tag": str(ok.to.tag),
                 "via": "TLS 127.0.0.1:5061"}
    answers = []
    for cseq in (2, 3):
        h.feed(in_dialog("INVITE", cseq, with_video, **from_lync), LYNC)
        sent = h.take()
        assert not [m for m, _ in sent if isinstance(m, Request)]  # the phone is not asked
        [answered] = [m for m, _ in sent if isinstance(m, Response) and m.status == 200]
        answers.append(answered.body)
    assert answers[0] == answers[1]
    answer = parse_sdp(answers[0])
    assert [(m.media, m.rejected) for m in answer.media] == [
        ("audio", False), ("applicationsharing", True), ("video", True)]
    assert answer.origin[2] == str(int(first.origin[2]) + 1)
    assert answer.media[0].lines == first.media[0].lines  # audio as it was
    [call] = h.b2bua.calls.values()
    assert isinstance(call.media, LyncCaller)
    assert call.media.video == "refused: x-rtvc1 only (RTVideo needs transcoding)"
    await call.media.close()
    await asyncio.gather(lync.close(), camera.close())


async def test_video_the_phone_adds_to_a_lync_callers_call_flows_both_ways(
        tmp_path: Path, x264: tuple[Path, list[bytes]]) -> None:
    """An audio call from Lync to which the phone adds H264 video by re-INVITE: ICE
    gathered for the new stream, Lync re-offered X-H264UC with our candidates and key and
    x-caps for what the phone takes (audio as in our answer, next o= version); Lync's
    answer taking it with a key answering ours makes our 200 to the phone answer its H264
    at a new relay port. Lync controls ICE for the stream, the relay joins it, and frames
    flow both ways frame for frame (x264 source, ffmpeg the judge); the CDR says video was
    up, and every port goes at the end."""
    h, ports, cdrs, lync, camera, camera_key = await lync_with_camera(tmp_path)
    offer, out, peer, ok = await audio_call_from_lync(h, lync)
    audio_only, first = phone_answer(5004), parse_sdp(ok.body)
    [call] = h.b2bua.calls.values()
    phone_video, phone_rx, phone_port = await phone()
    from_phone = {"call_id": out.call_id, "from_tag": "phone", "to_tag": str(out.from_.tag),
                  "via": "UDP 198.51.100.1:5060"}
    added = (audio_only + PHONE_VIDEO.replace(b"5006", b"%d" % phone_port)).replace(
        b"o=- 1 1", b"o=- 1 2")
    h.feed(in_dialog("INVITE", 1, added, **from_phone), peer)
    reinvite = await our_reinvite(h)  # once ICE has gathered for the new stream
    assert reinvite.call_id == "lync-call-1"
    offered = parse_sdp(reinvite.body)
    assert offered.origin[2] == str(int(first.origin[2]) + 1)
    assert [(m.media, m.rejected) for m in offered.media] == [
        ("audio", False), ("applicationsharing", True), ("video", False)]
    assert offered.media[0].lines == first.media[0].lines  # audio as it was
    to_lync = offered.media[2]
    assert to_lync.formats == ["122"] and to_lync.rtpmaps()[122].encoding == "X-H264UC"
    assert to_lync.attribute("ice-ufrag") and to_lync.attributes("candidate")
    assert to_lync.has("rtcp-mux") and to_lync.label == "main-video"
    assert (to_lync.attribute("x-caps") or "").startswith("122 ")
    [our_key] = to_lync.cryptos()
    lync_part = pick_sdp(split(offer.split(b"\r\n\r\n", 1)[1], BOUNDARY)).body
    lync_answer = (lync_part.replace(b"o=- 0 1", b"o=- 0 2").replace(
        b"m=applicationsharing 5398", b"m=applicationsharing 0")
        + lync_video(camera, camera_key).replace(" 122 121 123", " 122").replace(
            "a=crypto:2 ", f"a=crypto:{our_key.tag} ").encode())
    ours = answered_back(h, reinvite, lync_answer, LYNC, peer, 1)
    before = parse_sdp(out.body)
    assert ours.origin[2] == str(int(before.origin[2]) + 1)
    assert ours.media[0].lines == before.media[0].lines
    to_phone = ours.media[1]
    assert to_phone.formats == ["96"] and to_phone.rtpmaps()[96].encoding == "H264"
    assert to_phone.fmtp(96) == "profile-level-id=42e01f;packetization-mode=1"
    assert to_phone.port not in (0, before.media[0].port)
    assert isinstance(call.media, LyncCaller)
    stats = await camera_crosses(call, camera, camera_key, to_lync, phone_video, phone_rx,
                                 to_phone.port, x264, tmp_path)
    h.feed(bye_from_lync(str(ok.to.tag)), LYNC)
    for _ in range(10):
        await h.settle()
    assert cdrs.recent()[0]["video"] == (
        f"up: from Lync 640x360 60 frames (2 key), to Lync 640x360 60 frames (2 key); VSRs "
        f"{stats['vsr_sent']} sent, 0 received")
    cdrs.close()
    await lync.close()
    phone_video.close()
    assert ports.in_use == set()


@pytest.mark.parametrize("lync_video_answer", [b"m=video 0 RTP/SAVP 122\r\n", None],
                         ids=["Lync declines", "phone's H264 mode 0"])
async def test_video_the_phone_adds_that_cannot_be_carried_is_declined(
        lync_video_answer: bytes | None) -> None:
    """On an audio call from Lync, the phone adds video the call cannot carry: Lync
    declining our X-H264UC re-offer makes our 200 to the phone reject the stream (audio as
    it was), and H264 without packetization-mode 1 is rejected without asking Lync. Either
    way the new stream's ports go back, the CDR's word says why, and the call goes on."""
    base = free_port()
    ports = PortAllocator(base, base + 40)
    h = Harness([FIRST], ports=ports, address="127.0.0.1")
    lync = aioice.Connection(ice_controlling=True, components=1, use_ipv6=False)
    await lync.gather_candidates()
    offer, out, peer, _ = await audio_call_from_lync(h, lync)
    held = set(ports.in_use)
    video = PHONE_VIDEO if lync_video_answer else PHONE_VIDEO.replace(
        b";packetization-mode=1", b"")
    added = phone_answer(5004, video).replace(b"o=- 1 1", b"o=- 1 2")
    from_phone = {"call_id": out.call_id, "from_tag": "phone", "to_tag": str(out.from_.tag),
                  "via": "UDP 198.51.100.1:5060"}
    h.feed(in_dialog("INVITE", 1, added, **from_phone), peer)
    if lync_video_answer is None:
        sent = h.take()
        assert not [m for m, _ in sent if isinstance(m, Request)]  # Lync is not asked
        [answered] = [m for m, _ in sent if isinstance(m, Response) and m.status == 200]
        ours = parse_sdp(answered.body)
        why = "no H264 with packetization-mode=1 (Lync takes no other video untranscoded)"
    else:
        reinvite = await our_reinvite(h)  # once ICE has gathered for the new stream
        lync_part = pick_sdp(split(offer.split(b"\r\n\r\n", 1)[1], BOUNDARY)).body
        ours = answered_back(h, reinvite, lync_part.replace(b"o=- 0 1", b"o=- 0 2").replace(
            b"m=applicationsharing 5398", b"m=applicationsharing 0") + lync_video_answer,
            LYNC, peer, 1)
        why = "Lync declined video"
    assert [(m.media, m.rejected) for m in ours.media] == [("audio", False), ("video", True)]
    [call] = h.b2bua.calls.values()
    await h.ports_back(ports, held)
    assert call.media.video == f"refused: {why}"
    await call.media.close()
    await lync.close()
    assert ports.in_use == set()


async def test_lync_asking_for_less_video_re_offers_the_phone_a_lower_b_as(
        tmp_path: Path) -> None:
    """A video call from Lync to a phone; Lync re-INVITEs stating it now receives 500
    kbps of main video (a=x-mediabw, as when its network degrades): the phone is re-offered
    what it last had from us with the video's b=AS 500 (audio as it was, next o= version),
    and its answer makes our 200 to Lync. A later refresh stating the same is answered
    here, the phone not asked; one stating more raises it again, as far as the rule's cap
    (none here)."""
    v = await video_call(tmp_path)
    before = parse_sdp(v.out.body)
    assert before.media[1].bandwidth("AS") == 4000
    lower = re.sub(rb"(o=- \d+) \d+", rb"\1 2", v.lync_sdp).replace(
        b"t=0 0\r\n", b"t=0 0\r\na=x-mediabw:main-video send=4000;recv=500\r\n", 1)
    v.h.feed(in_dialog("INVITE", 2, lower, **v.from_lync), LYNC)
    [(reinvite, peer)] = [(m, p) for m, p in v.h.take()
                          if isinstance(m, Request) and m.method == "INVITE"]
    assert peer == v.phone
    offered = parse_sdp(reinvite.body)
    assert offered.origin[2] == str(int(before.origin[2]) + 1)
    assert offered.media[0].lines == before.media[0].lines
    assert offered.media[1].bandwidth("AS") == 500 and offered.media[1].port == (
        before.media[1].port)
    ours = answered_back(v.h, reinvite, v.phone_sdp.replace(b"o=- 1 1", b"o=- 1 2"), v.phone,
                         LYNC, 2)
    assert [(m.media, m.rejected) for m in ours.media] == [
        ("audio", False), ("video", False), ("applicationsharing", True)]
    same = re.sub(rb"(o=- \d+) \d+", rb"\1 3", lower)
    v.h.feed(in_dialog("INVITE", 3, same, **v.from_lync), LYNC)
    sent = v.h.take()
    assert not [m for m, _ in sent if isinstance(m, Request)]
    assert [m.status for m, _ in sent if isinstance(m, Response)][-1] == 200
    more = re.sub(rb"(o=- \d+) \d+", rb"\1 4", lower).replace(b"recv=500", b"recv=9000")
    v.h.feed(in_dialog("INVITE", 4, more, **v.from_lync), LYNC)
    [(reinvite, _)] = [(m, p) for m, p in v.h.take()
                       if isinstance(m, Request) and m.method == "INVITE"]
    assert parse_sdp(reinvite.body).media[1].bandwidth("AS") == 9000
    await v.end()


async def test_a_lync_hold_that_also_asks_for_less_video_carries_both(tmp_path: Path) -> None:
    """Lync holds (a=sendonly) in the same re-INVITE that states 500 kbps of main video:
    the one re-offer to the phone has both, sendonly and the video's b=AS 500, rather than
    the hold alone (the bandwidth then waiting for Lync's next refresh)."""
    v = await video_call(tmp_path)
    held = re.sub(rb"(o=- \d+) \d+", rb"\1 2", v.lync_sdp).replace(
        b"t=0 0\r\n", b"t=0 0\r\na=x-mediabw:main-video send=4000;recv=500\r\n", 1).replace(
        b"a=rtcp-mux\r\n", b"a=rtcp-mux\r\na=sendonly\r\n")
    v.h.feed(in_dialog("INVITE", 2, held, **v.from_lync), LYNC)
    [(reinvite, peer)] = [(m, p) for m, p in v.h.take()
                          if isinstance(m, Request) and m.method == "INVITE"]
    assert peer == v.phone
    offered = parse_sdp(reinvite.body)
    assert [m.direction for m in offered.media[:2]] == ["sendonly", "sendonly"]
    assert offered.media[1].bandwidth("AS") == 500
    phone_held = v.phone_sdp.replace(b"o=- 1 1", b"o=- 1 2").replace(
        b"t=0 0\r\n", b"t=0 0\r\na=recvonly\r\n", 1)
    ours = answered_back(v.h, reinvite, phone_held, v.phone, LYNC, 2)
    assert [(m.media, m.rejected, m.direction) for m in ours.media] == [
        ("audio", False, "recvonly"), ("video", False, "recvonly"),
        ("applicationsharing", True, None)]
    await v.end()
