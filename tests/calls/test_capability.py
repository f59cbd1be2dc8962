"""A rule's call capability (the guide's "Maximum media content of the call") on every
anchored call: streams beyond it are rejected with port 0 in what each leg is offered and
answered, whatever the far end answers, re-offers included; an offer with nothing left is
refused 488 saying why. SIP to SIP (`SipSide`), SIP toward Lync (`LyncCallee`) and Lync
toward SIP (`LyncCaller`)."""

from __future__ import annotations

import aioice
import pytest

from gateway.calls.lync_callee import LyncCallee
from gateway.calls.lync_caller import LyncCaller
from gateway.calls.sip_side import SipSide
from gateway.sip.message import Response, make_response
from gateway.transport.peer import Peer
from ice.ports import PortAllocator
from sdp.capability import Capability
from sdp.parse import parse_sdp
from tests.kit.calls import CALLER, FIRST, RULES, Harness, invite_with, outbound, statuses
from tests.peers import free_port

LYNC = Peer("TLS", "127.0.0.1", 5061, connection=3)
HEAD = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
AUDIO = b"m=audio %d RTP/AVP 9\r\na=rtpmap:9 G722/8000\r\n"
VIDEO = b"m=video %d RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\n"
SLIDES = VIDEO + b"a=content:slides\r\n"
BFCP = b"m=application %d TCP/BFCP *\r\na=floorctrl:c-only\r\n"
TO_LYNC = RULES.replace("protocols", 'outgoing_protocol = "mssip"\nprotocols')


def rules(capability: Capability, base: str = RULES) -> str:
    return base.replace("replace = ", f'call_capability = "{capability}"\nreplace = ')


def phone_sdp(*sections: bytes, first: int = 7000) -> bytes:
    return HEAD + b"".join(s % (first + 2 * i) for i, s in enumerate(sections))


def ports_of(body: bytes) -> list[int]:
    return [m.port for m in parse_sdp(body).media]


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6:
                        ["127.0.0.1"])


@pytest.mark.parametrize(("capability", "kept"), [
    ("audio_only", [True, False, False, False]),
    ("main_video", [True, True, False, False]),
    ("main_video_presentation", [True, True, True, True]),
])
async def test_sip_to_sip_offer_and_answer_keep_only_what_the_rule_allows(
        capability: Capability, kept: list[bool]) -> None:
    """Audio, main video, slides video and BFCP offered; a callee that accepts every stream
    whatever it was offered still leaves the caller's answer within the capability."""
    base = free_port()
    ports = PortAllocator(base, base + 40)
    h = Harness([FIRST], ports=ports, address="127.0.0.1", rules=rules(capability))
    h.feed(invite_with(phone_sdp(AUDIO, VIDEO, SLIDES, BFCP)), CALLER)
    await h.settle()
    out, peer = outbound(h.take(), "INVITE")
    assert [p != 0 for p in ports_of(out.body)] == kept
    h.feed(make_response(out, 200, to_tag="callee", headers=(("Contact", "<sip:a@127.0.0.1>"),),
                         body=phone_sdp(AUDIO, VIDEO, SLIDES, BFCP, first=9000),
                         content_type="application/sdp"), peer)
    ok = next(m for m, _ in h.take() if isinstance(m, Response) and m.status == 200)
    answered = parse_sdp(ok.body)
    assert [m.port != 0 for m in answered.media] == kept
    assert [m.media for m in answered.media] == ["audio", "video", "video", "application"]
    [call] = h.b2bua.calls.values()
    call.media.close()


async def test_a_re_offer_cannot_escalate_past_the_capability_either_way() -> None:
    """A re-offer from either leg that asks for the presentation again reaches the other
    leg with it rejected, and so does the answer coming back."""
    base = free_port()
    offer = parse_sdp(phone_sdp(AUDIO, VIDEO, SLIDES))
    side = SipSide(offer, PortAllocator(base, base + 40), "127.0.0.1", bandwidth_kbps=0,
                   media_timeout=60.0, call_id="c", capability="main_video")
    side.reserve()
    assert ports_of(side.offer((b"", None), "127.0.0.1")[0])[2] == 0
    side.answer((phone_sdp(AUDIO, VIDEO, SLIDES, first=9000), "application/sdp"), final=True)
    for from_caller in (True, False):
        reoffer = phone_sdp(AUDIO, VIDEO, SLIDES, first=8000).replace(b"o=- 1 1", b"o=- 1 2")
        relayed = side.relay_offer(from_caller=from_caller, body=reoffer)
        assert [p != 0 for p in ports_of(relayed)] == [True, True, False]
        back = side.relay_answer(from_caller=not from_caller, body=reoffer)
        assert [p != 0 for p in ports_of(back)] == [True, True, False]
    side.close()


@pytest.mark.parametrize("rules_for", [RULES, TO_LYNC], ids=["sip to sip", "toward lync"])
async def test_an_offer_with_nothing_within_the_capability_gets_488(rules_for: str) -> None:
    base = free_port()
    ports = PortAllocator(base, base + 40)
    h = Harness([FIRST], ports=ports, address="127.0.0.1",
                rules=rules("audio_only", rules_for))
    h.feed(invite_with(phone_sdp(VIDEO, SLIDES)), CALLER)
    await h.settle()
    sent = h.take()
    assert statuses(sent, CALLER) == [100, 488]
    refused = next(m for m, _ in sent if isinstance(m, Response) and m.status == 488)
    assert "video is beyond the rule's call capability (audio_only)" in refused.reason
    assert not h.b2bua.calls and ports.in_use == set()


@pytest.mark.parametrize(("capability", "kept"), [
    ("audio_only", [True, False, False]),
    ("main_video", [True, True, False]),
])
async def test_toward_lync_streams_beyond_the_capability_are_rejected_on_both_legs(
        capability: Capability, kept: list[bool]) -> None:
    """Lync is offered (and gathered for) only what the rule allows; the phone's answer
    rejects the rest however Lync answers it."""
    base = free_port()
    ports = PortAllocator(base, base + 40)
    h = Harness([FIRST], ports=ports, address="127.0.0.1", rules=rules(capability, TO_LYNC))
    h.feed(invite_with(phone_sdp(AUDIO, VIDEO, SLIDES)), CALLER)
    for _ in range(30):
        await h.settle()
    out, lync_peer = outbound(h.take(), "INVITE")
    to_lync = parse_sdp(out.body)
    assert [m.port != 0 for m in to_lync.media] == kept
    assert [m.has("ice-ufrag") for m in to_lync.media] == kept
    [call] = h.b2bua.calls.values()
    assert isinstance(call.media, LyncCallee)
    assert sum(s is not None for s in call.media.sessions) == sum(kept)
    lync_answer = HEAD + b"".join(
        b"m=%s %d RTP/SAVP %s\r\na=ice-ufrag:abcd\r\na=ice-pwd:%s\r\na=crypto:1 "
        b"AES_CM_128_HMAC_SHA1_80 inline:QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk|2^31\r\n"
        % (m.media.encode(), 6000 + 2 * i, m.formats[0].encode(), b"p" * 22)
        for i, m in enumerate(to_lync.media))  # Lync answers all three, wrongly
    h.feed(make_response(out, 200, to_tag="lync", body=lync_answer,
                         headers=(("Contact", "<sip:alice@127.0.0.1;transport=tls>"),),
                         content_type="application/sdp"), lync_peer)
    ok = next(m for m, p in h.take() if isinstance(m, Response) and m.status == 200)
    assert [p != 0 for p in ports_of(ok.body)] == kept
    await call.media.close()
    assert ports.in_use == set()


H264UC = b"122 X-H264UC/90000\r\na=fmtp:122 packetization-mode=1;mst-mode=NI-TC"


def lync_ice_offer() -> bytes:
    """An SfB client's offer: audio, main video, panoramic video and application sharing."""
    def stream(kind: bytes, port: int, fmt: bytes, label: bytes, rtpmap: bytes) -> bytes:
        return (b"m=%s %d RTP/SAVP %s\r\na=ice-ufrag:LyNc\r\na=ice-pwd:%s\r\n"
                b"a=candidate:1 1 UDP 2130706431 127.0.0.1 %d typ host\r\na=rtcp-mux\r\n"
                b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:QUJDREVGR0hJSktMTU5PUFFSU1RVVldYW"
                b"VphYmNk|2^31|1:1\r\na=label:%s\r\na=rtpmap:%s\r\n"
                % (kind, port, fmt, b"q" * 24, port, label, rtpmap))
    return (HEAD + stream(b"audio", 50010, b"9", b"main-audio", b"9 G722/8000")
            + stream(b"video", 50012, b"122", b"main-video", H264UC)
            + stream(b"video", 50014, b"122", b"panoramic-video", H264UC)
            + b"m=applicationsharing 50016 TCP/RTP/SAVP 127\r\na=label:applicationsharing\r\n"
            b"a=rtpmap:127 x-data/90000\r\n")


@pytest.mark.parametrize(("capability", "kept"), [
    ("audio_only", [True, False, False, False]),
    ("main_video", [True, True, False, False]),
    ("main_video_presentation", [True, True, True, False]),  # sharing is never relayed
])
async def test_from_lync_the_phone_is_offered_only_what_the_rule_allows(
        capability: Capability, kept: list[bool]) -> None:
    base = free_port()
    ports = PortAllocator(base, base + 40)
    h = Harness([FIRST], ports=ports, address="127.0.0.1", rules=rules(capability))
    h.feed(invite_with(lync_ice_offer()).replace(b"192.0.2.10:5062", b"127.0.0.1:5061"),
           LYNC)
    for _ in range(30):
        await h.settle()
    out, peer = outbound(h.take(), "INVITE")
    offered = parse_sdp(out.body).media
    assert [m.media for m in offered] == [k for k, keep in zip(
        ["audio", "video", "video", "applicationsharing"], kept, strict=True) if keep]
    video = (b"m=video %d RTP/AVP 122\r\na=rtpmap:122 H264/90000\r\n"
             b"a=fmtp:122 packetization-mode=1\r\n")  # as offered: Lync's, translated
    phone = phone_sdp(*[AUDIO if m.media == "audio" else video for m in offered])
    h.feed(make_response(out, 200, to_tag="phone", headers=(("Contact", "<sip:p@127.0.0.1>"),),
                         body=phone, content_type="application/sdp"), peer)
    ok = next(m for m, p in h.take() if isinstance(m, Response) and m.status == 200)
    assert [p != 0 for p in ports_of(ok.body)] == kept
    [call] = h.b2bua.calls.values()
    assert isinstance(call.media, LyncCaller)
    await call.media.close()
    assert ports.in_use == set()
