"""Hold and resume across a terminated leg: the directions an SDP states per kind of
stream, and our last description restated with new ones (next o= version, each stream its
own direction, an answer's formats bounded by the offer it answers); and our answer fitted
to a re-offer that adds or drops a stream (that stream rejected, next version); the kinds
a re-offer removes that were up, rejected in what the other leg is offered."""

from __future__ import annotations

from sdp.hold import conformed, directions, dropped, restated
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


def test_a_re_offer_that_adds_or_drops_a_stream_gets_it_rejected_and_a_refresh_nothing() -> None:
    """Video added to an audio call: the answer gains it rejected (port 0, its type kept);
    video dropped by its offerer: rejected in the answer too; the same shape again (a
    refresh): no new answer."""
    audio_only = parse_sdp(OURS.to_bytes().split(b"m=video")[0])
    added = conformed(audio_only, OURS)
    assert added is not None and added.origin[2] == "4"
    assert [(m.media, m.port) for m in added.media] == [
        ("audio", 40000), ("video", 0), ("applicationsharing", 0)]
    assert added.media[1].lines[0].value == "video 0 RTP/SAVP 121 122"
    drops = parse_sdp(OURS.to_bytes().replace(b"m=video 40002", b"m=video 0"))
    dropped = conformed(OURS, drops)
    assert dropped is not None and [m.port for m in dropped.media] == [40000, 0, 0]
    assert conformed(OURS, OURS) is None and conformed(dropped, drops) is None
    fewer = conformed(OURS, audio_only)
    assert fewer is not None and [m.media for m in fewer.media] == ["audio"]


def test_the_kinds_a_re_offer_removes_are_rejected_in_our_restated_offer() -> None:
    re_offer = parse_sdp(OURS.to_bytes().replace(b"m=video 40002", b"m=video 0"))
    assert dropped(OURS, re_offer) == {"video"}
    assert dropped(OURS, OURS) == frozenset()
    assert dropped(re_offer, OURS) == frozenset()  # adding back is not removing
    out = restated(OURS, {"audio": "sendrecv"}, dropping=frozenset({"video"}))
    audio, video, sharing = out.media
    assert sharing.rejected
    assert video.port == 0 and video.formats == ["121", "122"] and not video.lines[1:]
    assert audio.port == 40000 and audio.attribute("ice-ufrag") == "abcd"
    assert out.origin[2] == "4" and OURS.media[1].port == 40002
