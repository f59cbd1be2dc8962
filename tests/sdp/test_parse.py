"""SDP parse and write: byte-exact round trips of Lync, SfB and standard offers, typed access
to the Microsoft attributes, errors that name the line, and no foreign exception on any
input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdp.attributes import MediaBandwidth, RtcpFeedback, SsrcRange, parse_cryptoscale
from sdp.errors import SdpError
from sdp.multipart import pick_sdp, split
from sdp.parse import parse_sdp
from tests.sdp.conftest import LYNC_BOUNDARY, fixture


def lync_parts() -> list[bytes]:
    return [p.body for p in split(fixture("lync2013_multipart.txt"), LYNC_BOUNDARY)]


@pytest.mark.parametrize("name", ["sfb2015_av_appsharing.sdp", "polycom_group.sdp"])
def test_round_trip_is_exact(name: str) -> None:
    text = fixture(name).decode()
    assert parse_sdp(text).to_text(eol="\n") == text


def test_lync_multipart_parts_round_trip_with_crlf() -> None:
    for body in lync_parts():
        assert parse_sdp(body).to_bytes() == body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def test_microsoft_attributes_are_typed() -> None:
    sdp = parse_sdp(fixture("sfb2015_av_appsharing.sdp"))
    audio, video, sharing = sdp.media
    assert audio.media_bandwidths() == [MediaBandwidth("main-audio", 94, 94)]
    assert audio.ssrc_range() == SsrcRange(3196104960, 3196104960)
    assert video.ssrc_range() == SsrcRange(3196104961, 3196105060)
    assert [c.tag for c in audio.cryptos()] == [2, 3]
    assert audio.cryptos()[0].key == "v0gyrtIQmzq94Ayp8WJhU9hX7SPTDtCIm5MHcCEo"
    scale = parse_cryptoscale(audio.attribute("cryptoscale") or "")
    assert (scale.role, scale.suite) == ("client", "AES_CM_128_HMAC_SHA1_80")
    assert audio.attribute("label") == "main-audio" and video.attribute("x-source") == (
        "main-video")
    assert video.rtpmaps()[122].encoding == "X-H264UC"
    assert video.fmtp(122) == "packetization-mode=1;mst-mode=NI-TC"
    assert (sharing.media, sharing.proto, sharing.attribute("mid")) == (
        "applicationsharing", "TCP/RTP/SAVP", "1")
    assert audio.attribute("ice-ufrag") == "7Qmi"
    assert len(audio.attributes("candidate")) == 4
    assert audio.attributes("x-candidate-ipv6") == ["4 1 UDP 2130706431 2001:db8::44 19464 "
                                                    "typ host"]
    from sdp.attributes import parse_rtcp_fb
    assert parse_rtcp_fb(audio.attribute("rtcp-fb") or "") == RtcpFeedback(
        "*", "x-message", "app send:dsh recv:dsh")
    assert sdp.connection_address(audio) == "192.0.2.44"
    from sdp.attributes import parse_group, parse_x_caps
    caps = parse_x_caps(video.attribute("x-caps") or "")
    assert caps.payload_type == 121 and caps.modes[0] == (263, 1920, 1080, 30.0, 2000000)
    assert parse_group("BUNDLE audio video").mids == ("audio", "video")
    assert (audio.label, video.label, sharing.mid) == ("main-audio", "main-video", "1")


def test_remote_candidates_are_typed_and_checked() -> None:
    """The second offer's a=remote-candidates (RFC 5245 9.1.2.2) reads as its pairs; a
    malformed one is an error naming its line."""
    head = "v=0\no=- 1 2 IN IP4 h\ns=-\nm=audio 1 RTP/AVP 0\n"
    sdp = parse_sdp(head + "a=remote-candidates:1 192.0.2.1 5000 2 192.0.2.1 5001\n")
    assert [(c.component, c.address, c.port) for c in sdp.media[0].remote_candidates()] == [
        (1, "192.0.2.1", 5000), (2, "192.0.2.1", 5001)]
    with pytest.raises(SdpError) as caught:
        parse_sdp(head + "a=remote-candidates:1 192.0.2.1\n")
    assert caught.value.line == 5 and "remote-candidates" in caught.value.rule


def test_static_payload_types_need_no_rtpmap() -> None:
    sdp = parse_sdp("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\n"
                    "m=audio 4000 RTP/AVP 0 8\r\n")
    assert [m.encoding for m in sdp.media[0].rtpmaps().values()] == ["PCMU", "PCMA"]


def test_edits_change_lines_in_place() -> None:
    sdp = parse_sdp(fixture("polycom_group.sdp"))
    audio = sdp.media[0]
    audio.set_port(5000)
    audio.set_direction("sendonly")
    audio.set_bandwidth("AS", 64)
    text = sdp.to_text(eol="\n")
    assert "m=audio 5000 RTP/AVP" in text and "a=sendonly" in text and "a=sendrecv\nm=video" \
        not in text
    lines = text.split("\n")
    assert lines.index("b=AS:64") == lines.index("m=audio 5000 RTP/AVP 115 102 9 0 8 101") + 1


@pytest.mark.parametrize(("text", "line", "words"), [
    ("x=0\n", 1, "first line must be v=0"),
    ("v=0\no=- 1 1 IN IP4 h\ns=-\nm=audio port RTP/AVP 0\n", 4, "m= must be"),
    ("v=0\no=- 1 1 IN IP4 h\ns=-\nm=audio 70000 RTP/AVP 0\n", 4, "out of range"),
    ("v=0\no=- 1 1 IN IP4 h\ns=-\nc=IN IP4 2001:db8::1\n", 4, "not an IP4 address"),
    ("v=0\no=- 1 1 IN IP4 h\ns=-\nm=audio 1 RTP/AVP 0\na=rtpmap:200 X/1\n", 5, "rtpmap"),
    ("v=0\no=- 1 1 IN IP4 h\ns=-\nm=audio 1 RTP/AVP 0\na=crypto:1 AES\n", 5, "crypto"),
    ("v=0\no=- 1 1 IN IP4 h\ns=-\nm=audio 1 RTP/AVP 0\na=x-ssrc-range:9-1\n", 5, "first <="),
    ("v=0\no=- 1 1 IN IP4 h\ns=-\nm=audio 1 RTP/AVP 0\nA=foo\n", 5, "lower-case type"),
    ("v=0\ns=-\n", 0, "needs an origin"),
])
def test_errors_name_the_line_and_the_rule(text: str, line: int, words: str) -> None:
    with pytest.raises(SdpError) as caught:
        parse_sdp(text)
    assert caught.value.line == line and words in caught.value.rule


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_random_bytes_raise_only_sdp_errors(data: bytes) -> None:
    try:
        sdp = parse_sdp(data)
    except SdpError:
        return
    text = sdp.to_text()  # whatever parsed writes out as SDP that parses the same
    assert parse_sdp(text).to_text() == text


ATTRIBUTE = st.sampled_from([
    "sendrecv", "rtcp-mux", "ice-ufrag:abcd", "x-foo:bar baz", "rtpmap:96 opus/48000/2",
    "fmtp:96 minptime=10", "crypto:1 AES_CM_128_HMAC_SHA1_80 inline:a2V5|2^31",
    "x-mediabw:main-video send=1;recv=2", "candidate:1 1 UDP 1 10.0.0.1 9 typ host", "label:x",
])


@given(st.lists(st.tuples(st.sampled_from(["audio", "video"]), st.integers(0, 65535),
                          st.lists(ATTRIBUTE, max_size=6)), max_size=4),
       st.lists(ATTRIBUTE, max_size=3))
def test_generated_descriptions_round_trip(
    media: list[tuple[str, int, list[str]]], session_attrs: list[str]
) -> None:
    lines = ["v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "t=0 0"]
    lines += [f"a={a}" for a in session_attrs]
    for kind, port, attrs in media:
        lines.append(f"m={kind} {port} RTP/AVP 0 96")
        lines += [f"a={a}" for a in attrs]
    text = "\r\n".join(lines) + "\r\n"
    assert parse_sdp(text).to_text() == text


def test_pick_prefers_the_rfc5245_part_over_the_2007_fallback() -> None:
    parts = split(fixture("lync2013_multipart.txt"), LYNC_BOUNDARY)
    assert [p.is_fallback for p in parts] == [True, False]
    chosen = pick_sdp(parts)
    assert parse_sdp(chosen.body).media[0].attribute("ice-ufrag") == "Hn8u"
