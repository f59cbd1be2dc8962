"""What a standard SIP endpoint is offered out of Lync's audio: G.722 mono, G.711 both laws,
telephone-event and CN, in that order, with the offerer's payload numbers; nothing of
Lync's own (SILK, RTAudio, Siren, G.722 stereo, x-ulpfecuc), whose rtpmap and fmtp lines
go with them."""

from __future__ import annotations

from sdp.multipart import pick_sdp, split
from sdp.parse import parse_sdp
from sdp.standard import keep_formats, standard_audio
from tests.sdp.conftest import LYNC_BOUNDARY, fixture


def test_lync_2013s_fifteen_audio_payload_types_come_down_to_the_standard_ones() -> None:
    offer = parse_sdp(pick_sdp(split(fixture("lync2013_multipart.txt"), LYNC_BOUNDARY)).body)
    audio = offer.media[0]
    maps = audio.rtpmaps()
    kept = standard_audio(audio)
    names = [(maps[int(pt)].encoding.upper(), maps[int(pt)].channels or 1) for pt in kept]
    assert names[:3] == [("G722", 1), ("PCMU", 1), ("PCMA", 1)]
    assert {name for name, _ in names} <= {"G722", "PCMU", "PCMA", "TELEPHONE-EVENT", "CN"}
    assert len(audio.formats) > len(kept)  # Lync's own were there, and are gone
    lines = keep_formats([ln for ln in audio.lines if ln.kind == "a"], kept)
    described = {(ln.attribute[1] or "").split(" ", 1)[0] for ln in lines
                 if ln.attribute[0] in ("rtpmap", "fmtp")}
    assert described <= set(kept)


def test_static_payload_types_without_rtpmap_count_too() -> None:
    media = parse_sdp(b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
                      b"t=0 0\r\nm=audio 5004 RTP/AVP 8 0 18\r\n").media[0]
    assert standard_audio(media) == ["0", "8"]  # G.729 is no codec offered on
