"""A rule's call capability over a description: which streams go beyond it (presentation
as Lync and SIP endpoints write it, a second video stream), the copy with them rejected,
and an offer left with nothing refused as a whole."""

from __future__ import annotations

import pytest

from sdp.capability import Capability, beyond, require_some, within
from sdp.errors import NotAcceptable
from sdp.parse import parse_sdp

HEAD = "v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n"
AUDIO = "m=audio 5004 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
VIDEO = "m=video 5006 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
SLIDES = VIDEO.replace("5006", "5008") + "a=content:slides\r\n"
BFCP = "m=application 5010 TCP/BFCP *\r\na=floorctrl:c-only\r\n"
PANORAMIC = VIDEO.replace("5006", "5012") + "a=label:panoramic-video\r\n"
SHARING = "m=applicationsharing 5014 TCP/RTP/SAVP 127\r\na=rtpmap:127 x-data/90000\r\n"
VBSS = VIDEO.replace("5006", "5016") + "a=label:applicationsharing-video\r\n"
TEXT = "m=text 5018 RTP/AVP 98\r\na=rtpmap:98 t140/1000\r\n"
ALL = (AUDIO, VIDEO, SLIDES, BFCP, PANORAMIC, SHARING, VBSS, TEXT)


@pytest.mark.parametrize(("capability", "kept"), [
    ("audio_only", [AUDIO, TEXT]),
    ("main_video", [AUDIO, VIDEO, TEXT]),
    ("main_video_presentation", list(ALL)),
])
def test_what_each_capability_keeps(capability: Capability, kept: list[str]) -> None:
    offer = parse_sdp(HEAD + "".join(ALL))
    refused = beyond(offer, capability)
    assert [section for section, reason in zip(ALL, refused, strict=True)
            if not reason] == kept
    assert all(f"call capability ({capability})" in r for r in refused if r)
    limited = within(offer, refused)
    assert [m.port == 0 for m in limited.media] == [bool(r) for r in refused]
    assert [m.media for m in limited.media] == [m.media for m in offer.media]
    if refused[2]:  # in place, formats kept, nothing else
        assert [str(line) for line in limited.media[2].lines] == ["m=video 0 RTP/AVP 96"]
    assert offer.media[2].port == 5008  # a copy


def test_main_video_is_the_first_video_that_is_no_presentation() -> None:
    offer = parse_sdp(HEAD + SLIDES + VIDEO.replace("5006", "0") + VIDEO + PANORAMIC)
    assert [bool(r) for r in beyond(offer, "main_video")] == [True, False, False, True]
    assert "a second video stream" in beyond(offer, "main_video")[3]


def test_an_offer_the_capability_leaves_empty_is_refused_naming_why() -> None:
    video_only = parse_sdp(HEAD + VIDEO)
    with pytest.raises(NotAcceptable) as refused:
        require_some(video_only, beyond(video_only, "audio_only"))
    assert refused.value.status_hint == 488
    assert "video: video is beyond the rule's call capability (audio_only)" in str(refused.value)
    require_some(video_only, beyond(video_only, "main_video"))
    empty = parse_sdp(HEAD)  # nothing refused: left to the endpoints
    require_some(empty, beyond(empty, "audio_only"))
