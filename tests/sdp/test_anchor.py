"""Anchoring a SIP-to-SIP description at the relay (addresses, RTCP port, a rule's bandwidth
cap) and reading where a peer wants its RTP and RTCP (RFC 3605 a=rtcp, else RTP + 1)."""

from __future__ import annotations

from dataclasses import dataclass

from sdp.anchor import Remote, anchored, remote_addresses
from sdp.offer_answer import rule_cap
from sdp.parse import parse_sdp

PEER = ("v=0\r\no=- 7 7 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n"
        "m=audio 5004 RTP/AVP 0\r\nb=AS:64\r\na=rtcp:6001 IN IP4 192.0.2.77\r\n"
        "m=video 5006 RTP/AVP 96\r\nb=AS:4000\r\na=rtpmap:96 H264/90000\r\n"
        "a=x-mediabw:main-video send=8100;recv=300\r\n"
        "m=video 0 RTP/AVP 97\r\n")


def test_peer_rtcp_address_is_its_a_rtcp_else_the_port_after_rtp() -> None:
    """RFC 3605: a stated a=rtcp (port, and address when given) is where RTCP goes; without
    one, RFC 3550's RTP port + 1 on the stream's address; a rejected stream has none."""
    assert remote_addresses(parse_sdp(PEER)) == [
        Remote(("192.0.2.9", 5004), ("192.0.2.77", 6001)),
        Remote(("192.0.2.9", 5006), ("192.0.2.9", 5007)),
        None,
    ]
    port_only = parse_sdp(PEER.replace("a=rtcp:6001 IN IP4 192.0.2.77", "a=rtcp:6001"))
    assert remote_addresses(port_only)[0] == Remote(("192.0.2.9", 5004), ("192.0.2.9", 6001))


def test_anchored_points_rtcp_at_the_relay_pair_and_applies_the_cap() -> None:
    """The relay's RTCP port is its (even) RTP port + 1, so a peer's a=rtcp is rewritten to
    that; the rule's cap lowers b=AS/b=TIAS and Lync's x-mediabw where the peer asked for
    more, keeps what it asked below the cap, and leaves rejected streams alone."""
    out = anchored(parse_sdp(PEER), "203.0.113.5", [40000, 40002, 40004], bandwidth_kbps=512)
    audio, video, rejected = out.media
    assert audio.port == 40000 and audio.attribute("rtcp") == "40001"
    assert (audio.bandwidth("AS"), audio.bandwidth("TIAS")) == (64, 512000)
    assert (video.bandwidth("AS"), video.bandwidth("TIAS")) == (512, 512000)
    assert video.attribute("x-mediabw") == "main-video send=512;recv=300"
    assert rejected.port == 0 and rejected.bandwidth("AS") is None
    assert parse_sdp(out.to_text()).to_text() == out.to_text()
    uncapped = anchored(parse_sdp(PEER), "203.0.113.5", [40000, 40002, 40004])
    assert uncapped.media[1].bandwidth("AS") == 4000 and uncapped.media[1].bandwidth(
        "TIAS") is None


def test_rtcp_mux_keeps_rtcp_on_the_one_port() -> None:
    """With rtcp-mux the relay reserved one port for the stream: a=rtcp names it."""
    muxed = parse_sdp(PEER.replace("a=rtcp:6001 IN IP4 192.0.2.77\r\n",
                                   "a=rtcp:5004\r\na=rtcp-mux\r\n"))
    out = anchored(muxed, "203.0.113.5", [40000, 40002, 40004])
    assert out.media[0].attribute("rtcp") == "40000"


@dataclass(frozen=True)
class Limits:
    max_inbound_bandwidth_kbps: int
    max_outbound_bandwidth_kbps: int


def test_a_rule_caps_each_stream_at_the_lower_of_its_limits() -> None:
    """Relayed media is received from one participant and sent to the other, so both of a
    rule's limits bind both directions; 0 is no limit, and a service has no rule."""
    assert rule_cap(Limits(1024, 1024)) == 1024  # max_bandwidth_kbps sets both
    assert rule_cap(Limits(2048, 512)) == 512
    assert rule_cap(Limits(0, 768)) == 768
    assert rule_cap(Limits(0, 0)) == 0
    assert rule_cap(None) == 0
