"""Hold and resume across a terminated leg: the directions an SDP states per kind of
stream, and our last description restated with new ones (next o= version, each stream its
own direction, an answer's formats bounded by the offer it answers)."""

from __future__ import annotations

from sdp.hold import directions, restated
from sdp.parse import parse_sdp

OURS = parse_sdp(
    b"v=0\r\no=lyncgate 7 3 IN IP4 203.0.113.5\r\ns=-\r\nc=IN IP4 203.0.113.5\r\nt=0 0\r\n"
    b"a=sendrecv\r\n"
    b"m=audio 40000 RTP/SAVP 9 0 101\r\na=ice-ufrag:abcd\r\na=rtpmap:9 G722/8000\r\n"
    b"m=video 40002 RTP/SAVP 121 122\r\na=rtpmap:121 x-rtvc1/90000\r\n"
    b"m=applicationsharing 0 TCP/RTP/SAVP 127\r\n")


def test_directions_per_kind_with_the_session_level_one_as_default() -> None:
    assert directions(OURS) == {"audio": "sendrecv", "video": "sendrecv"}
    held = parse_sdp(OURS.to_bytes().replace(b"a=ice-ufrag:abcd\r\n",
                                             b"a=ice-ufrag:abcd\r\na=sendonly\r\n"))
    assert directions(held) == {"audio": "sendonly", "video": "sendrecv"}


def test_restated_sets_each_kind_bumps_the_version_and_keeps_the_rest() -> None:
    out = restated(OURS, {"audio": "recvonly"})
    assert out.origin[2] == "4" and OURS.origin[2] == "3"  # a copy: ours is unchanged
    audio, video, sharing = out.media
    assert (audio.direction, video.direction) == ("recvonly", "sendrecv")
    assert out.session.direction is None  # moved onto the streams
    assert audio.attribute("ice-ufrag") == "abcd" and audio.formats == ["9", "0", "101"]
    assert sharing.rejected and sharing.direction is None


def test_an_answer_lists_only_formats_the_offer_has() -> None:
    offer = parse_sdp(
        b"v=0\r\no=- 1 2 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
        b"m=audio 5000 RTP/AVP 0 101\r\na=sendonly\r\nm=video 0 RTP/AVP 121\r\n"
        b"m=applicationsharing 0 TCP/RTP/SAVP 127\r\n")
    out = restated(OURS, {"audio": "recvonly"}, answering=offer)
    assert out.media[0].formats == ["0", "101"]
    assert out.media[1].formats == ["121", "122"]  # rejected in the offer: not narrowed
