"""The Video Source Request: 20-octet header and 68-octet entry as [MS-RTP] 2.2.12.2 lays
them out, the key-frame bit as 0x80 of octet 13, read back as written; what is asked for
follows the SIP side's limits (frame rates up to its own, its size and bit rate); other
application layer feedback is not taken for a VSR, a truncated one is refused."""

from __future__ import annotations

import pytest

from gateway.media.video_plan import SipVideoLimits
from gateway.media.vsr import ENTRY_SIZE, HEADER_SIZE, KEY_FRAME, Vsr, entry_for, layout_fps


def test_vsr_round_trips_with_the_key_frame_bit_first() -> None:
    entry = entry_for(SipVideoLimits(1920, 1080, 25.0, 2_000_000), 122)
    assert (entry.max_width, entry.max_height, entry.min_bitrate, entry.max_pixels) == (
        1920, 1080, 2_000_000, 1920 * 1080)
    assert entry.frame_rates == 0x0F  # 7.5, 12.5, 15, 25
    vsr = Vsr(7, True, (entry,))
    fci = vsr.fci()
    assert len(fci) == HEADER_SIZE + ENTRY_SIZE == int.from_bytes(fci[2:4], "big")
    assert fci[13] == KEY_FRAME == 0x80 and fci[14:16] == bytes([1, ENTRY_SIZE])
    assert Vsr.parse(fci) == vsr
    assert Vsr.parse(Vsr(8, False, (entry,)).fci()) == Vsr(8, False, (entry,))


def test_not_a_vsr_or_a_truncated_one() -> None:
    assert Vsr.parse(b"\x00\x03\x00\x08" + bytes(4)) is None  # dominant speaker history
    fci = Vsr(1, False, (entry_for(SipVideoLimits(640, 360, 30.0, 500_000), 122),)).fci()
    with pytest.raises(ValueError):
        Vsr.parse(fci[:-1])
    with pytest.raises(ValueError):
        Vsr.parse(fci[:12])


def test_frame_rates_a_layout_can_state() -> None:
    assert layout_fps(29.97) == 25.0 and layout_fps(30.0) == 30.0 and layout_fps(5.0) == 7.5
    assert entry_for(SipVideoLimits(320, 240, 5.0, 100_000), 122).frame_rates == 0x01
