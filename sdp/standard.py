"""What a standards-based SIP endpoint is offered out of a Lync/SfB offer: the codecs such
endpoints implement, in the preference a room system expects, and nothing Lync-only (SILK,
RTAudio, Siren, G.722 stereo, Lync's FEC). Lync offers its own first (15 audio payload
types, G.722 stereo leading): a standard endpoint offered those as they are either picks a
worse common codec than it could or refuses the offer."""

from __future__ import annotations

from sdp.model import Line, Media

# (encoding, clock rate, channels) in the order offered: wideband first, then narrowband,
# then the keypad and comfort noise. Channels 1 only: G.722 stereo is Lync's own.
STANDARD_AUDIO = (("g722", 8000, 1), ("pcmu", 8000, 1), ("pcma", 8000, 1),
                  ("telephone-event", 8000, 1), ("cn", 8000, 1))


def standard_audio(offered: Media) -> list[str]:
    """The payload types of `offered` a standard endpoint is offered, in the order of
    STANDARD_AUDIO (the offerer's numbers kept)."""
    maps = offered.rtpmaps()
    rank = {codec: n for n, codec in enumerate(STANDARD_AUDIO)}
    chosen: list[tuple[int, int, str]] = []
    for position, text in enumerate(offered.formats):
        rtpmap = maps.get(int(text)) if text.isdigit() else None
        key = None if rtpmap is None else (rtpmap.encoding.lower(), rtpmap.clock_rate,
                                           rtpmap.channels or 1)
        if key in rank:
            chosen.append((rank[key], position, text))
    return [text for _, _, text in sorted(chosen)]


def keep_formats(lines: list[Line], formats: list[str]) -> list[Line]:
    """`lines` (a media section's a= lines) without the rtpmap and fmtp lines of payload
    types not in `formats`."""
    kept = set(formats)
    return [ln for ln in lines if ln.attribute[0] not in ("rtpmap", "fmtp")
            or (ln.attribute[1] or "").split(" ", 1)[0] in kept]
