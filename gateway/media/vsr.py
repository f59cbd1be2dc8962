"""The Video Source Request ([MS-RTP] 2.2.12.2): how a Lync/SfB receiver tells the sender
what video it wants (payload type, UCConfig mode, largest picture, bit rate, frame rates)
and asks for a key frame. An application layer feedback message (PSFB, FMT=15, AFB type 1)
with a 20-octet header and one 68-octet entry (Entry Length 0x44).

The key-frame bit: [MS-RTP]'s header diagram puts A (Keyframe, 1 bit) first in the octet
after Version, followed by Reserve2 (7 bits); its diagrams number bits from the most
significant, as RFC diagrams do, so A is 0x80. SIPE, which interoperates with Lync, writes
the same octet as `keyframe << 7`. Wireshark's dissector (4.0, `rtcp.psfb.ms.vsr.
key_frame_request`) masks 0x01 instead: it finds the same octet, and reads our key-frame
requests as false. The specification is what Lync implements, so 0x80."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.media.video_plan import SipVideoLimits
from gateway.media.video_rtcp import FMT_AFB, PSFB, feedback

AFB_VSR = 1
HEADER_SIZE = 20
ENTRY_SIZE = 68
KEY_FRAME = 0x80
SOURCE_ANY = 0xFFFFFFFE  # MSI: the sender chooses which of its sources
# UCConfig mode 1 (a base layer, temporal scalability allowed): what SIPE asks Lync for with
# success; every temporal layer of it is plain AVC, which is all the SIP side gets.
UCCONFIG_MODE = 1
FLAG_CONSTRAINED_BASELINE = 0x02  # "only supports constrained baseline (H.264 only)"
ASPECT_4_3, ASPECT_16_9 = 0x01, 0x02
# Frame rate bit mask, and the Layer Description's frame rates ([MS-H264PF] FPSIdx).
FPS_BITS = {7.5: 0x01, 12.5: 0x02, 15.0: 0x04, 25.0: 0x08, 30.0: 0x10, 50.0: 0x20, 60.0: 0x40}
BITRATE_PER_LEVEL = 10_000  # width of the bit rate histogram's buckets, bits per second
HISTOGRAM_BUCKETS = 10


@dataclass(frozen=True, slots=True)
class VsrEntry:
    payload_type: int
    max_width: int
    max_height: int
    min_bitrate: int  # bits per second: the lowest histogram bucket, where our receiver is
    frame_rates: int  # FPS_BITS
    max_pixels: int
    ucconfig_mode: int = UCCONFIG_MODE
    flags: int = FLAG_CONSTRAINED_BASELINE
    aspect_ratios: int = ASPECT_4_3 | ASPECT_16_9
    bitrate_per_level: int = BITRATE_PER_LEVEL
    # Receivers in each bit rate bucket, from min_bitrate up by bitrate_per_level: ours is
    # the one receiver, in the first.
    bitrate_histogram: tuple[int, ...] = (1,) + (0,) * (HISTOGRAM_BUCKETS - 1)

    @property
    def bitrate(self) -> int:
        """The bit rate asked for: the top of the highest bucket any receiver is in (the
        lowest bucket's when none is)."""
        top = max((index for index, count in enumerate(self.bitrate_histogram) if count),
                  default=0)
        return self.min_bitrate + (top + 1) * self.bitrate_per_level

    def to_bytes(self) -> bytes:
        # One receiver: in the bit rate histogram, and in the first bucket of the quality
        # histogram (eight), as one MAY instance.
        return (bytes([self.payload_type, self.ucconfig_mode, self.flags, self.aspect_ratios])
                + self.max_width.to_bytes(2, "big") + self.max_height.to_bytes(2, "big")
                + self.min_bitrate.to_bytes(4, "big") + bytes(4)
                + self.bitrate_per_level.to_bytes(4, "big")
                + b"".join(count.to_bytes(2, "big") for count in self.bitrate_histogram)
                + self.frame_rates.to_bytes(4, "big") + (0).to_bytes(2, "big")
                + (1).to_bytes(2, "big") + (1).to_bytes(2, "big") + bytes(14)
                + self.max_pixels.to_bytes(4, "big"))

    @classmethod
    def parse(cls, data: bytes) -> VsrEntry:
        if len(data) < ENTRY_SIZE:
            raise ValueError("vsr entry short")
        return cls(data[0], int.from_bytes(data[4:6], "big"), int.from_bytes(data[6:8], "big"),
                   int.from_bytes(data[8:12], "big"), int.from_bytes(data[40:44], "big"),
                   int.from_bytes(data[64:68], "big"), data[1], data[2], data[3],
                   int.from_bytes(data[16:20], "big"),
                   tuple(int.from_bytes(data[at:at + 2], "big") for at in range(20, 40, 2)))


@dataclass(frozen=True, slots=True)
class Vsr:
    request_id: int
    key_frame: bool
    entries: tuple[VsrEntry, ...]
    msi: int = SOURCE_ANY

    def fci(self) -> bytes:
        length = HEADER_SIZE + ENTRY_SIZE * len(self.entries)
        return (AFB_VSR.to_bytes(2, "big") + length.to_bytes(2, "big")
                + self.msi.to_bytes(4, "big") + (self.request_id & 0xFFFF).to_bytes(2, "big")
                + bytes(3) + bytes([KEY_FRAME if self.key_frame else 0, len(self.entries),
                                    ENTRY_SIZE]) + bytes(4)
                + b"".join(entry.to_bytes() for entry in self.entries))

    @classmethod
    def parse(cls, fci: bytes) -> Vsr | None:
        """The VSR an application layer feedback FCI holds; None for another AFB type.
        Raises ValueError when it is one but does not fit its own lengths."""
        if len(fci) < 4 or int.from_bytes(fci[0:2], "big") != AFB_VSR:
            return None
        if len(fci) < HEADER_SIZE:
            raise ValueError("vsr short")
        count, size = fci[14], fci[15]
        if size < ENTRY_SIZE or len(fci) < HEADER_SIZE + count * size:
            raise ValueError("vsr entries short")
        entries = tuple(VsrEntry.parse(fci[at:at + size])
                        for at in range(HEADER_SIZE, HEADER_SIZE + count * size, size))
        return cls(int.from_bytes(fci[8:10], "big"), bool(fci[13] & KEY_FRAME), entries,
                   int.from_bytes(fci[4:8], "big"))

    def packet(self, sender: int, media: int) -> bytes:
        return feedback(PSFB, FMT_AFB, sender, media, self.fci())


def entry_for(limits: SipVideoLimits, payload_type: int) -> VsrEntry:
    """What to ask Lync for so that the SIP endpoint can take it: at most its picture size,
    its bit rate, and every standard frame rate up to its own."""
    rates = 0
    for fps, bit in FPS_BITS.items():
        if fps <= limits.fps:
            rates |= bit
    return VsrEntry(payload_type, limits.width, limits.height, limits.bitrate_bps,
                    rates or FPS_BITS[7.5], limits.width * limits.height)


def layout_fps(fps: float) -> float:
    """The highest frame rate a Layer Description can state that is not above `fps`."""
    return max((rate for rate in FPS_BITS if rate <= fps), default=min(FPS_BITS))
