"""RTCP across a translating video relay (RFC 3550 6, RFC 4585 6, RFC 5506): each side talks
to the gateway as if it were the only other party, so what one side says about its stream
is rewritten into the other side's terms: the sender's SSRC becomes the gateway's toward
the receiver, a sender report's counts become what the gateway sent, and a report block or
NACK about the gateway's packets is mapped, through the translator's `SequenceMap`, onto
the sequence numbers of the packets they were made from; a TMMBR is written for the SIP
sender when Lync asks for less. Pure functions on bytes; a
compound packet that does not parse is None, which callers count and drop."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

SR, RR, SDES, BYE, APP, RTPFB, PSFB, XR = range(200, 208)
FMT_NACK, FMT_TMMBR = 1, 3  # RTPFB (RFC 4585 6.2.1, RFC 5104 4.2.1)
FMT_PLI, FMT_FIR, FMT_AFB = 1, 4, 15  # PSFB (RFC 4585 6.3.1, RFC 5104 4.3.1, RFC 4585 6.4)
BLOCK_SIZE = 24
MAX_NACK_ITEMS = 16  # FCIs in one NACK: 272 packets, more than a 1080p IDR
# Shifts of a translator's sequence numbers remembered for mapping reports and NACKs: about
# one an access unit, so ~30 s of 30 fps video, far longer than any report interval.
MAP_SEGMENTS = 1024


@dataclass(frozen=True, slots=True)
class Rtcp:
    """One packet of a compound: its count / FMT field, packet type and body (what follows
    the 4-octet header, padding removed)."""

    count: int
    type: int
    body: bytes

    def to_bytes(self) -> bytes:
        return packet(self.count, self.type, self.body)


def packet(count: int, kind: int, body: bytes) -> bytes:
    """One RTCP packet; `body` padded with zeros to whole 32-bit words."""
    body += bytes(-len(body) % 4)
    return bytes([0x80 | (count & 0x1F), kind]) + (len(body) // 4).to_bytes(2, "big") + body


def split(data: bytes) -> list[Rtcp] | None:
    """The packets of a compound RTCP packet, or None when any length or version is wrong."""
    parts = []
    at = 0
    while at < len(data):
        if len(data) - at < 4 or data[at] >> 6 != 2:
            return None
        size = 4 * (int.from_bytes(data[at + 2:at + 4], "big") + 1)
        if at + size > len(data):
            return None
        body = data[at + 4:at + size]
        if data[at] & 0x20:  # the last octet counts the padding, itself included
            if not body or not 0 < body[-1] <= len(body):
                return None
            body = body[:-body[-1]]
        parts.append(Rtcp(data[at] & 0x1F, data[at + 1], body))
        at += size
    return parts or None


@dataclass(frozen=True, slots=True)
class ReportBlock:
    ssrc: int
    fraction_lost: int
    lost: int  # cumulative, 24-bit two's complement as sent
    highest: int  # extended highest sequence number received
    jitter: int
    lsr: int
    dlsr: int

    def to_bytes(self) -> bytes:
        return (self.ssrc.to_bytes(4, "big") + bytes([self.fraction_lost])
                + (self.lost & 0xFFFFFF).to_bytes(3, "big")
                + (self.highest & 0xFFFFFFFF).to_bytes(4, "big")
                + self.jitter.to_bytes(4, "big") + self.lsr.to_bytes(4, "big")
                + self.dlsr.to_bytes(4, "big"))

    @classmethod
    def parse(cls, data: bytes) -> ReportBlock:
        return cls(int.from_bytes(data[0:4], "big"), data[4], int.from_bytes(data[5:8], "big"),
                   int.from_bytes(data[8:12], "big"), int.from_bytes(data[12:16], "big"),
                   int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big"))


BlockMap = Callable[[ReportBlock], "ReportBlock | None"]


def rewrite_report(part: Rtcp, ssrc: int, counts: tuple[int, int],
                   blocks: BlockMap) -> bytes | None:
    """An SR or RR as the gateway's (`ssrc`): an SR's packet and octet counts replaced by
    `counts`, its NTP and RTP timestamps kept (the timestamps go through unchanged, and the
    far end's LSR/DLSR then still measure the round trip end to end), each report block
    mapped by `blocks` or left out, and anything after the blocks (Lync's profile-specific
    extensions) left out. None when the packet is shorter than its count says."""
    head = 24 if part.type == SR else 4
    end = head + BLOCK_SIZE * part.count
    if len(part.body) < end:
        return None
    kept = [mapped.to_bytes() for at in range(head, end, BLOCK_SIZE)
            if (mapped := blocks(ReportBlock.parse(part.body[at:at + BLOCK_SIZE]))) is not None]
    body = ssrc.to_bytes(4, "big")
    if part.type == SR:
        body += (part.body[4:16] + (counts[0] & 0xFFFFFFFF).to_bytes(4, "big")
                 + (counts[1] & 0xFFFFFFFF).to_bytes(4, "big"))
    return packet(len(kept), part.type, body + b"".join(kept))


def receiver_report(ssrc: int) -> bytes:
    """An empty RR: what a compound packet starts with when there is nothing to report."""
    return packet(0, RR, ssrc.to_bytes(4, "big"))


def rewrite_sdes(part: Rtcp, ssrc: int) -> bytes | None:
    """The first chunk of an SDES (the sender's own: CNAME ...) as the gateway's `ssrc`;
    other chunks (a mixer's contributors) left out. None when the chunk does not parse."""
    body = part.body
    at = 4
    while True:
        if at >= len(body):
            return None
        if body[at] == 0:  # the end of the item list
            break
        if at + 2 > len(body) or at + 2 + body[at + 1] > len(body):
            return None
        at += 2 + body[at + 1]
    items = body[4:at]
    chunk = ssrc.to_bytes(4, "big") + items + bytes(4 - (4 + len(items)) % 4)
    return packet(1, SDES, chunk)


def bye(ssrc: int) -> bytes:
    return packet(1, BYE, ssrc.to_bytes(4, "big"))


def feedback(kind: int, fmt: int, sender: int, media: int, fci: bytes = b"") -> bytes:
    """An RTPFB or PSFB message (RFC 4585 6.1)."""
    return packet(fmt, kind, sender.to_bytes(4, "big") + media.to_bytes(4, "big") + fci)


def pli(sender: int, media: int) -> bytes:
    return feedback(PSFB, FMT_PLI, sender, media)


def feedback_media(part: Rtcp) -> int | None:
    """The media source SSRC of a feedback message (None: too short to be one)."""
    return int.from_bytes(part.body[4:8], "big") if len(part.body) >= 8 else None


def nack_sequences(part: Rtcp) -> list[int]:
    """The sequence numbers a generic NACK (RFC 4585 6.2.1) names."""
    out = []
    for at in range(8, len(part.body) - 3, 4):
        pid = int.from_bytes(part.body[at:at + 2], "big")
        blp = int.from_bytes(part.body[at + 2:at + 4], "big")
        out.append(pid)
        out.extend((pid + bit + 1) & 0xFFFF for bit in range(16) if blp >> bit & 1)
    return out


def nack(sender: int, media: int, sequences: list[int]) -> bytes | None:
    """A generic NACK naming `sequences` (at most MAX_NACK_ITEMS FCIs; None if empty)."""
    items: list[tuple[int, int]] = []
    for seq in sorted(set(sequences)):
        if items and 0 < (seq - items[-1][0]) & 0xFFFF <= 16:
            pid, blp = items[-1]
            items[-1] = (pid, blp | 1 << (((seq - pid) & 0xFFFF) - 1))
        elif len(items) < MAX_NACK_ITEMS:
            items.append((seq, 0))
    if not items:
        return None
    fci = b"".join(pid.to_bytes(2, "big") + blp.to_bytes(2, "big") for pid, blp in items)
    return feedback(RTPFB, FMT_NACK, sender, media, fci)


def tmmbr(sender: int, media: int, bitrate: int, overhead: int) -> bytes:
    """A TMMBR (RFC 5104 4.2.1.1) asking the sender of `media` to stay under `bitrate`
    bits per second, with `overhead` octets a packet on top of the payload: the media
    source field is 0, the stream is named in the FCI, and the rate is a 17-bit mantissa
    with a 6-bit exponent (rounded down, so never more than asked)."""
    exponent = max(0, bitrate.bit_length() - 17)
    fci = (media.to_bytes(4, "big")
           + ((exponent << 26) | ((bitrate >> exponent) << 9) | (overhead & 0x1FF)).to_bytes(
               4, "big"))
    return feedback(RTPFB, FMT_TMMBR, sender, 0, fci)


def tmmbr_requests(part: Rtcp) -> list[tuple[int, int]]:
    """(SSRC, bits per second) of each FCI of a TMMBR."""
    out = []
    for at in range(8, len(part.body) - 7, 8):
        word = int.from_bytes(part.body[at + 4:at + 8], "big")
        out.append((int.from_bytes(part.body[at:at + 4], "big"),
                    ((word >> 9) & 0x1FFFF) << (word >> 26)))
    return out


# [MS-RTP] 2.2.11 profile-specific extensions in Lync's reports that bound what it receives.
EXT_POLICY_SERVER_BANDWIDTH = 7  # 2.2.11.5: set by the bandwidth policy server
EXT_RECEIVER_BANDWIDTH_LIMIT = 10  # 2.2.11.8: set by the receiver of the stream


def report_extensions(part: Rtcp) -> dict[int, int]:
    """The 12-octet profile-specific extensions (type, length 12, 4 reserved octets, a
    32-bit value) after an SR's or RR's report blocks, by type; others are skipped by
    their length, and a length that does not fit ends the walk."""
    at = (24 if part.type == SR else 4) + BLOCK_SIZE * part.count
    body = part.body
    found = {}
    while at + 4 <= len(body):
        kind = int.from_bytes(body[at:at + 2], "big")
        size = int.from_bytes(body[at + 2:at + 4], "big")
        if size < 4 or at + size > len(body):
            break
        if size == 12:
            found[kind] = int.from_bytes(body[at + 8:at + 12], "big")
        at += size
    return found


class SequenceMap:
    """Which packet in each packet out was made from. A translator numbers a packet out as
    the packet in it was made from plus a shift, which changes only where the translator
    drops a packet or adds one of its own (a PACSI, a prefix unit, a filler), so the map is
    the list of places where the shift changed: from each on, out = in + that shift. Input
    numbers are kept extended (with their wrap count), as report blocks carry them. A packet
    the translator added maps to the packet in that came after it."""

    __slots__ = ("_segments",)

    def __init__(self) -> None:
        # (first sequence number out, the extended one in it was made from)
        self._segments: deque[tuple[int, int]] = deque(maxlen=MAP_SEGMENTS)

    def shift(self, out_seq: int, in_seq: int) -> None:
        """From packet out `out_seq` on, the packets out come from `in_seq` (extended) on."""
        self._segments.append((out_seq & 0xFFFF, in_seq))

    def inputs(self, out_seq: int) -> int | None:
        """The extended input sequence number packet out `out_seq` was made from; None
        before the first shift, or for a number older than the shifts remembered."""
        for first, source in reversed(self._segments):
            offset = (out_seq - first) & 0xFFFF
            if offset < 0x8000:
                return source + offset
        return None


def map_block(block: ReportBlock, ours: int, source: int | None,
              inputs: Callable[[int], int | None]) -> ReportBlock | None:
    """A report block about the gateway's stream `ours` as one about `source`, the stream
    it was made from: highest sequence number mapped by `inputs` (a translator's
    `source_sequence`), loss and jitter as reported (the loss rate carries over; the counts
    are of translated packets). None for a block about any other stream or one whose
    packets are no longer mapped."""
    if block.ssrc != ours or source is None:
        return None
    highest = inputs(block.highest & 0xFFFF)
    if highest is None:
        return None
    return ReportBlock(source, block.fraction_lost, block.lost, highest & 0xFFFFFFFF,
                       block.jitter, block.lsr, block.dlsr)
