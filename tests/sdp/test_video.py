"""Video SDP between X-H264UC and H264: what a SIP endpoint's description says it takes
(H.264 Table A-1 levels raised by max-fs/max-mbps, imageattr, b=AS/TIAS and the rule's
cap), which streams can be translated (x-rtvc1 only, H264 packetization-mode 0 cannot),
and the lines each side gets: constrained-baseline H264 toward SIP (TMMBR offered, and
answered only when offered), X-H264UC with Lync's attributes (x-caps within the SIP
side's limits, our SSRC range) toward Lync."""

from __future__ import annotations

import pytest

from sdp.attributes import SsrcRange, parse_x_caps
from sdp.model import Media
from sdp.multipart import pick_sdp, split
from sdp.parse import parse_sdp
from sdp.video import (
    LEVELS,
    Limits,
    h264_pm1,
    image_bounds,
    level_for,
    level_of,
    limits,
    lync_kbps,
    lync_lines,
    lync_receives,
    refusal,
    sip_lines,
    takes_source_requests,
    takes_tmmbr,
    video_kbps,
    x_caps,
    x_h264uc,
)
from tests.sdp.conftest import LYNC_BOUNDARY, fixture

HEAD = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"


def video(lines: str) -> Media:
    return parse_sdp(HEAD + "m=video 5006 RTP/AVP 109\r\na=rtpmap:109 H264/90000\r\n"
                     + lines).media[0]


def sip_limits(fmtp: str, extra: str = "", session: str = "", cap: int = 0) -> Limits:
    sdp = parse_sdp(HEAD.replace("t=0 0\r\n", f"{session}t=0 0\r\n")
                    + f"m=video 5006 RTP/AVP 109\r\n{extra}a=rtpmap:109 H264/90000\r\n"
                    + f"a=fmtp:109 {fmtp}\r\n")
    return limits(sdp, sdp.media[0], 109, cap)


@pytest.mark.parametrize(("profile_level_id", "expected"), [
    ("42e00a", (176, 144, 15.0, 64000)),  # level 1: QCIF at 1485/99 = 15 fps
    ("42e015", (424, 240, 30.0, 4000000)),  # 2.1: 792 macroblocks, 640x360 is 920
    ("42e01e", (640, 480, 30.0, 10000000)),  # 3: 1620, 960x540 is 2040
    ("42e01f", (1280, 720, 30.0, 14000000)),  # 3.1: 3600 = 720p, 108000/3600 = 30
    ("42e028", (1920, 1080, 30.0, 20000000)),  # 4: 8160 of 8192
])
def test_a_level_gives_the_largest_size_it_carries_at_fifteen_fps_or_more(
        profile_level_id: str, expected: tuple[int, int, float, int]) -> None:
    got = sip_limits(f"profile-level-id={profile_level_id};packetization-mode=1")
    assert (got.width, got.height, got.fps, got.bitrate_bps) == expected


def test_no_profile_level_id_is_level_1_and_1b_is_told_apart() -> None:
    """RFC 6184 8.1: the default is Baseline level 1; level_idc 11 with constraint_set3
    in Baseline is 1b, not 1.1."""
    assert level_of("packetization-mode=1").name == "1"
    assert level_of("profile-level-id=42f00b").name == "1b"
    assert level_of("profile-level-id=42e00b").name == "1.1"
    assert level_of("profile-level-id=zz").name == "1"


def test_max_fs_and_max_mbps_raise_the_level_and_a_slow_large_picture_is_not_chosen() -> None:
    """Level 3 with max-fs for 720p but no more macroblocks per second would give 720p at
    11 fps: 960x540 at 19.85 is chosen; with max-mbps as well, 720p at 30."""
    slow = sip_limits("profile-level-id=42e01e;max-fs=3600")
    assert (slow.width, slow.height, slow.fps) == (960, 540, 19.85)
    fast = sip_limits("profile-level-id=42e01e;max-fs=3600;max-mbps=108000")
    assert (fast.width, fast.height, fast.fps) == (1280, 720, 30.0)
    polycom = parse_sdp(fixture("polycom_group.sdp"))
    group = limits(polycom, polycom.media[1], 109)  # level 2.2 raised to 8192 / 245000
    assert (group.width, group.height, group.fps) == (1920, 1080, 30.0)
    assert group.bitrate_bps == 1984000  # its b=TIAS, below the session's b=AS 2048


def test_a_level_that_allows_nothing_at_fifteen_fps_gives_its_smallest_fit() -> None:
    got = sip_limits("profile-level-id=42e00a;max-fs=396")  # CIF, 1485/396 = 3.75 fps
    assert (got.width, got.height, got.fps) == (176, 144, 15.0)


def test_imageattr_recv_bounds_the_size_and_send_does_not() -> None:
    extra = ("a=imageattr:109 send [x=1920,y=1080] recv [x=[320:16:640],y=[240:16:360]] "
             "[x=424,y=240]\r\n")
    got = sip_limits("profile-level-id=42e028;packetization-mode=1", extra)
    assert (got.width, got.height) == (640, 360)
    media = parse_sdp(HEAD + "m=video 5006 RTP/AVP 109\r\na=imageattr:* recv *\r\n").media[0]
    assert image_bounds(media, 109) == []
    other = parse_sdp(HEAD + "m=video 5006 RTP/AVP 109\r\n"
                      "a=imageattr:96 recv [x=176,y=144]\r\n").media[0]
    assert image_bounds(other, 109) == []  # another payload type's


def test_bit_rate_is_the_lowest_of_b_as_tias_the_rule_and_the_level() -> None:
    fmtp = "profile-level-id=42e01f;packetization-mode=1"
    assert sip_limits(fmtp, "b=AS:768\r\n").bitrate_bps == 768000
    assert sip_limits(fmtp, "b=AS:768\r\n", cap=512).bitrate_bps == 512000
    assert sip_limits(fmtp, session="b=AS:384\r\n").bitrate_bps == 384000
    assert sip_limits(fmtp, "b=TIAS:300000\r\n").bitrate_bps == 300000
    assert sip_limits("profile-level-id=42e00c").bitrate_bps == 384000  # level 1.2


def lync_video() -> Media:
    offer = parse_sdp(pick_sdp(split(fixture("lync2013_multipart.txt"), LYNC_BOUNDARY)).body)
    return offer.media[1]


def test_which_streams_can_be_translated() -> None:
    """Lync's X-H264UC (its x-rtvc1 and FEC beside it do not matter); x-rtvc1 alone is
    refused naming it; a SIP side needs H264 with packetization-mode 1."""
    lync = lync_video()
    assert x_h264uc(lync) == 122 and refusal(lync, lync=True) == ""
    rtv = parse_sdp(HEAD + "m=video 5006 RTP/SAVP 121 123\r\na=rtpmap:121 x-rtvc1/90000\r\n"
                    "a=rtpmap:123 x-ulpfecuc/90000\r\n").media[0]
    assert refusal(rtv, lync=True) == "x-rtvc1 only (RTVideo needs transcoding)"
    mode0 = video("a=fmtp:109 profile-level-id=42e01f\r\n")
    assert h264_pm1(mode0) is None and refusal(mode0, lync=False).startswith("no H264 with")
    mode1 = video("a=fmtp:109 profile-level-id=42e01f;packetization-mode=1\r\n")
    assert h264_pm1(mode1) == 109 and refusal(mode1, lync=False) == ""


def test_what_lync_receives_and_whether_it_takes_source_requests() -> None:
    sfb = parse_sdp(fixture("sfb2015_av_appsharing.sdp"))
    assert lync_receives(sfb, sfb.media[1]) == (1920, 1080, 30.0)  # its x-caps
    assert lync_kbps(sfb, sfb.media[1]) == 8100
    assert takes_source_requests(sfb.media[1])
    assert not takes_source_requests(sfb.media[0])  # audio's dsh only
    session_level = parse_sdp(HEAD.replace("t=0 0", "t=0 0\r\na=x-mediabw:main-video "
                                                     "send=4000;recv=3000")
                              + "m=video 1 RTP/SAVP 122\r\n")
    assert lync_kbps(session_level, session_level.media[0]) == 3000
    assert lync_receives(session_level, session_level.media[0]) == (1920, 1080, 30.0)
    assert lync_kbps(parse_sdp(HEAD), lync_video()) is None


def test_the_level_offered_to_a_sip_endpoint_covers_what_lync_receives() -> None:
    assert level_for(1920, 1080, 30).name == "4"
    assert level_for(1280, 720, 30).name == "3.1"
    assert level_for(640, 480, 30).name == "3"
    assert level_for(8192, 8192, 60) == LEVELS[-1]
    text = "".join(f"{line}\r\n" for line in sip_lines(122, level_for(1280, 720, 30),
                                                         tmmbr=True))
    assert text == ("a=rtpmap:122 H264/90000\r\n"
                    "a=fmtp:122 profile-level-id=42e01f;packetization-mode=1\r\n"
                    "a=rtcp-fb:122 nack pli\r\na=rtcp-fb:122 ccm fir\r\n"
                    "a=rtcp-fb:122 ccm tmmbr\r\n")
    assert video_kbps(None, 0) == 4000 and video_kbps(2000, None, 512) == 512


@pytest.mark.parametrize(("feedback", "takes"), [
    ("a=rtcp-fb:109 ccm tmmbr\r\n", True),
    ("a=rtcp-fb:* ccm tmmbr\r\n", True),
    ("a=rtcp-fb:109 CCM TMMBR smaxpr=120\r\n", True),  # RFC 5104 7.1's optional smaxpr
    ("a=rtcp-fb:109 ccm fir\r\na=rtcp-fb:109 nack pli\r\n", False),
    ("a=rtcp-fb:110 ccm tmmbr\r\n", False),  # another format's
    ("a=rtcp-fb:109 nack tmmbr\r\n", False),  # not a ccm message
    ("a=rtcp-fb:109 ccm tmmbrx\r\n", False),  # another message
    ("", False),
])
def test_whether_a_sip_endpoints_h264_takes_tmmbr(feedback: str, takes: bool) -> None:
    """TMMBR is taken for the H264 format when an rtcp-fb line for its number or `*`
    names `ccm tmmbr` (any case, smaxpr or not), and not for anything else."""
    assert takes_tmmbr(video(feedback), 109) is takes


def test_an_answer_to_a_sip_endpoint_names_tmmbr_only_when_it_was_offered() -> None:
    """Without `tmmbr` the lines toward SIP keep PLI and FIR feedback and leave TMMBR out
    (an answer may not add feedback the offer lacked)."""
    lines = [line.value for line in sip_lines(109, level_for(640, 480, 30), tmmbr=False)]
    assert lines[2:] == ["rtcp-fb:109 nack pli", "rtcp-fb:109 ccm fir"]
    assert "rtcp-fb:109 ccm tmmbr" in [line.value for line in sip_lines(
        109, level_for(640, 480, 30), tmmbr=True)]


def test_lync_gets_x_h264uc_with_its_attributes_and_x_caps_within_the_sip_limits() -> None:
    lines = lync_lines(122, Limits(1280, 720, 30.0, 1500000), SsrcRange(10, 109), 1500)
    media = Media([parse_sdp(HEAD + "m=video 1 RTP/SAVP 122\r\n").media[0].lines[0], *lines])
    assert media.attribute("rtcp-fb") == "* x-message app send:src,x-pli recv:src,x-pli"
    assert media.has("rtcp-rsize") and media.label == "main-video"
    assert media.ssrc_range() == SsrcRange(10, 109)
    assert media.attribute("x-mediabw") == "main-video send=1500;recv=1500"
    assert media.fmtp(122) == "packetization-mode=1;mst-mode=NI-TC"
    assert media.rtpmaps()[122].encoding == "X-H264UC"
    caps = parse_x_caps(media.attribute("x-caps") or "")
    sizes = [(w, h) for _, w, h, _, _ in caps.modes]
    assert sizes[0] == (1280, 720) and (1920, 1080) not in sizes
    assert {(640, 480), (352, 288), (176, 144)} <= set(sizes)  # VGA, CIF, QCIF: a MUST
    assert [m[0] for m in caps.modes[:3]] == [263, 4359, 8455]
    assert all(fps == 30.0 and bps == 1500000 for _, _, _, fps, bps in caps.modes)
    assert x_caps(Limits(176, 144, 15.0, 64000)) == "263:176:144:15.0:64000:1"
