"""Offer/answer (RFC 3264) tables: codec intersection keeping the offerer's payload types,
directions, rejected streams, the bandwidth cap, and each SRTP policy."""

from __future__ import annotations

import pytest

from sdp.errors import NotAcceptable
from sdp.offer_answer import AUDIO, VIDEO, Codec, MediaPlan, answer, payload_remap
from sdp.parse import parse_sdp
from tests.sdp.conftest import fixture

PLAN = MediaPlan("203.0.113.5", 40000, ice_ufrag="gwuf", ice_pwd="gwpassword0123456789ab",
                 candidates=("candidate:1 1 UDP 2130706431 203.0.113.5 40000 typ host",))
KEY = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk"


def offer(media: str, extra: str = "", proto: str = "RTP/AVP", formats: str = "0 8 101") -> str:
    return (f"v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n"
            f"m={media} 5004 {proto} {formats}\r\na=rtpmap:101 telephone-event/8000\r\n{extra}")


def test_sfb_offer_against_a_standard_endpoint() -> None:
    """SfB audio+video+sharing toward an endpoint that has G.722/PCMU and H.264 (mode 1)."""
    result = answer(parse_sdp(fixture("sfb2015_av_appsharing.sdp")),
                    {"audio": [Codec("G722", 8000), Codec("PCMU", 8000), Codec("CN", 8000),
                               Codec("telephone-event", 8000)],
                     "video": [Codec("H264", 90000, fmtp="packetization-mode=1")]},
                    [PLAN, PLAN, None], origin_address="203.0.113.5", new_key=lambda: KEY)
    audio, video, sharing = result.streams
    assert [c.payload_type for c in audio.codecs] == [9, 0, 13, 101]  # offer order, offer PTs
    assert not video.accepted and video.reason == "no codec in common"  # X-H264UC != H264
    assert not sharing.accepted
    text = result.sdp.to_text()
    assert "m=audio 40000 RTP/SAVP 9 0 13 101\r\n" in text
    assert "m=video 0 RTP/SAVP 122\r\n" in text
    assert "m=applicationsharing 0 TCP/RTP/SAVP 127\r\n" in text
    # SRTP: the offer's tag 2 suite, a fresh key, the offer's lifetime and MKI layout
    assert f"a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^31|1:1\r\n" in text
    assert audio.remote_crypto is not None and audio.remote_crypto.tag == 2
    assert "a=ice-ufrag:gwuf\r\n" in text and "a=candidate:1 1 UDP 2130706431" in text
    assert "a=x-mediabw:main-audio send=94;recv=94" in text
    assert "a=label:main-audio" in text and "a=sendrecv" in text
    assert parse_sdp(text).to_text() == text  # the answer is valid SDP


def test_h264_needs_the_same_packetization_mode() -> None:
    sdp = parse_sdp(fixture("polycom_group.sdp"))
    result = answer(sdp, {"audio": AUDIO, "video": [Codec("H264", 90000)]}, [PLAN, PLAN],
                    origin_address="203.0.113.5")
    assert [c.payload_type for c in result.streams[1].codecs] == [110]  # mode 0 only


@pytest.mark.parametrize(("offered", "answered"), [
    ("a=sendonly\r\n", "a=recvonly"), ("a=recvonly\r\n", "a=sendonly"),
    ("a=inactive\r\n", "a=inactive"), ("", "a=sendrecv"),
])
def test_direction(offered: str, answered: str) -> None:
    result = answer(parse_sdp(offer("audio", offered)), {"audio": AUDIO}, [PLAN],
                    origin_address="203.0.113.5")
    assert answered in result.sdp.to_text()


def test_bandwidth_cap_sets_as_tias_and_mediabw() -> None:
    text = offer("video", "a=x-mediabw:main-video send=8100;recv=4000\r\n"
                 "a=rtpmap:34 H263/90000\r\n", formats="34")
    result = answer(parse_sdp(text), {"video": [Codec("H263", 90000)]}, [PLAN],
                    bandwidth_kbps=1024, origin_address="203.0.113.5")
    out = result.sdp.to_text()
    assert "b=AS:1024\r\nb=TIAS:1024000\r\n" in out
    assert "a=x-mediabw:main-video send=1024;recv=1024" in out
    assert result.streams[0].bandwidth_kbps == 1024


def test_srtp_required_refuses_a_plain_offer_with_488() -> None:
    with pytest.raises(NotAcceptable) as refused:
        answer(parse_sdp(offer("audio")), {"audio": AUDIO}, [PLAN], encryption="required",
               origin_address="203.0.113.5")
    assert refused.value.status_hint == 488 and "SRTP is required" in refused.value.rule


def test_srtp_off_rejects_savp_and_ignores_best_effort_crypto() -> None:
    crypto = "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY + "\r\n"
    with pytest.raises(NotAcceptable, match="sip_media_encryption is off"):
        answer(parse_sdp(offer("audio", crypto, proto="RTP/SAVP")), {"audio": AUDIO}, [PLAN],
               encryption="off", origin_address="203.0.113.5")
    plain = answer(parse_sdp(offer("audio", crypto)), {"audio": AUDIO}, [PLAN],
                   encryption="off", origin_address="203.0.113.5")
    assert "a=crypto" not in plain.sdp.to_text() and plain.streams[0].local_crypto is None


def test_best_effort_answers_sdes_on_avp_and_prefers_the_80_bit_tag() -> None:
    crypto = ("a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:" + KEY + "\r\n"
              "a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:" + KEY + "\r\n"
              "a=crypto:3 F8_128_HMAC_SHA1_80 inline:" + KEY + "\r\n")
    result = answer(parse_sdp(offer("audio", crypto)), {"audio": AUDIO}, [PLAN],
                    origin_address="203.0.113.5")
    local = result.streams[0].local_crypto
    assert local is not None and (local.tag, local.suite) == (2, "AES_CM_128_HMAC_SHA1_80")
    assert local.key != KEY and len(local.key) == 40  # fresh 30-byte key, base64


def test_nothing_acceptable_is_a_488_with_every_reason() -> None:
    with pytest.raises(NotAcceptable) as refused:
        answer(parse_sdp(offer("video", formats="34")), {"video": VIDEO}, [PLAN],
               origin_address="203.0.113.5")
    assert "video: no codec in common" in refused.value.rule


def test_rtcp_mux_is_accepted_when_offered_and_planned() -> None:
    result = answer(parse_sdp(offer("audio", "a=rtcp-mux\r\n")), {"audio": AUDIO}, [PLAN],
                    origin_address="203.0.113.5")
    assert result.streams[0].rtcp_mux and "a=rtcp-mux" in result.sdp.to_text()


def test_payload_remap_renumbers_toward_what_the_receiver_declared() -> None:
    """RFC 3264 5.1: packets toward a side carry the numbers its own description gives each
    codec (matched by name, clock rate and channels). The sender numbers them as the
    description we gave it says; its own numbers are renumbered too (some endpoints send
    with those), except one that our description gives to another codec."""
    lync = parse_sdp(offer("audio", "a=rtpmap:96 SILK/16000\r\n", formats="96 0 101")).media[0]
    sip = parse_sdp(offer("audio", formats="0 96").replace(
        "a=rtpmap:101 telephone-event/8000", "a=rtpmap:96 telephone-event/8000")).media[0]
    # Toward the SIP side, from Lync, to which we declared Lync's own numbering.
    assert payload_remap(sip, lync, lync) == {101: 96}
    # Toward Lync, from the SIP side, to which we offered Lync's numbers: 96 is SILK there,
    # so a SIP 96 is read as SILK (no change), not as the SIP side's telephone-event.
    assert payload_remap(lync, lync, sip) == {}
    # Had we declared nothing at 96, the SIP side's own 96 is its telephone-event.
    no_silk = parse_sdp(offer("audio", formats="0 101")).media[0]
    assert payload_remap(no_silk, no_silk, sip) == {96: 101}
