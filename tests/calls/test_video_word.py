"""The CDR's word on translated video comes from the relay's counters: sizes from the SPS,
frames and key frames each way, frames dropped in translation, VSRs; "not up" when ICE came
up and no frame went out either way."""

from __future__ import annotations

from gateway.calls.video_word import flowed


def way(frames: int, key: int, width: int = 1280, height: int = 720,
        dropped: dict[str, int] | None = None) -> dict[str, object]:
    return {"access_units_out": frames, "key_frames": key, "width": width, "height": height,
            "frames_dropped": dropped or {}, "packets_in": frames * 3}


def test_both_ways_with_sizes_key_frames_drops_and_vsrs() -> None:
    stats = {"lync->sip": way(900, 30), "sip->lync": way(898, 31, 640, 360,
                                                           {"loss": 1, "incomplete": 2}),
             "vsr_sent": 3, "vsr_received": 1}
    assert flowed(stats, "1280x720") == (
        "up: from Lync 1280x720 900 frames (30 key), to Lync 640x360 898 frames (31 key, 3 "
        "dropped); VSRs 3 sent, 1 received")


def test_one_way_only_is_up_and_says_which() -> None:
    stats = {"lync->sip": way(0, 0, 0, 0), "sip->lync": way(60, 2, 640, 360),
             "vsr_sent": 12, "vsr_received": 0}
    assert flowed(stats, "1280x720") == (
        "up: from Lync no frames, to Lync 640x360 60 frames (2 key); VSRs 12 sent, 0 received")


def test_no_frames_either_way_is_not_up_and_names_the_negotiated_size() -> None:
    stats = {"lync->sip": way(0, 0, 0, 0), "sip->lync": way(0, 0, 0, 0), "vsr_sent": 5,
             "vsr_received": 0}
    assert flowed(stats, "960x540") == (
        "not up: no frames either way (960x540 negotiated); VSRs 5 sent, 0 received")
    assert flowed({}, "960x540") == (
        "not up: no frames either way (960x540 negotiated); VSRs 0 sent, 0 received")
