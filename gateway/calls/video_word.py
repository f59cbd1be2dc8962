"""The CDR's word on a call's translated video, from what the relay counted rather than what
the SDP allowed: per direction the picture size of the last SPS seen, the frames and key
frames that went out and the frames dropped in translation; the VSRs sent to Lync and
received from it.

    up: from Lync 1280x720 900 frames (30 key), to Lync 640x360 898 frames (30 key, 2
    dropped); VSRs 3 sent, 1 received

"up" when frames went out either way, "not up: no frames either way (WxH negotiated)" when
ICE came up and nothing did.
"""

from __future__ import annotations

from collections.abc import Mapping

# The relay's directions (VideoRelay.video_stats), in the words a CDR reader knows.
DIRECTIONS = (("lync->sip", "from Lync"), ("sip->lync", "to Lync"))


def flowed(stats: Mapping[str, object], negotiated: str) -> str:
    """`stats`: one stream's `VideoRelay.video_stats()`; `negotiated`: "WxH", the size the
    SIP side's SDP allows (what was asked of Lync)."""
    ways = [_way(name, stats.get(key)) for key, name in DIRECTIONS]
    feedback = f"VSRs {_count(stats, 'vsr_sent')} sent, {_count(stats, 'vsr_received')} received"
    if not any(frames for _, frames in ways):
        return f"not up: no frames either way ({negotiated} negotiated); {feedback}"
    return f"up: {', '.join(text for text, _ in ways)}; {feedback}"


def _way(name: str, counters: object) -> tuple[str, int]:
    """One direction in words, and how many frames went out."""
    if not isinstance(counters, Mapping):
        return f"{name} no frames", 0
    frames = _count(counters, "access_units_out")
    if not frames:
        return f"{name} no frames", 0
    notes = [f"{_count(counters, 'key_frames')} key"]
    dropped = counters.get("frames_dropped")
    lost = sum(v for v in dropped.values() if isinstance(v, int)) if isinstance(
        dropped, Mapping) else 0
    if lost:
        notes.append(f"{lost} dropped")
    size = f"{_count(counters, 'width')}x{_count(counters, 'height')}"
    return f"{name} {size} {frames} frames ({', '.join(notes)})", frames


def _count(counters: Mapping[str, object], key: str) -> int:
    value = counters.get(key)
    return value if isinstance(value, int) else 0
