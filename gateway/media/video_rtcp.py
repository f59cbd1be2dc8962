"""RTCP across a translating video relay (RFC 3550 6, RFC 4585 6, RFC 5506): each side talks
to the gateway as if it were the only other party, so what one side says about its stream
is rewritten into the other side's terms: the sender's SSRC becomes the gateway's toward
the receiver, a sender report's counts become what the gateway sent, and a report block or
NACK about the gateway's packets is mapped, through the translator's `SequenceMap`, onto
the sequence numbers of the packets they were made from. Pure functions on bytes; a
compound packet that does not parse is None, which callers count and drop."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

SR, RR, SDES, BYE, APP, RTPFB, PSFB, XR = range(200, 208)
FMT_NACK = 1  # RTPFB (RFC 4585 6.2.1)
FMT_PLI, FMT_FIR, FMT_AFB = 1, 4, 15  # PSFB (RFC 4585 6.3.1, RFC 5104 4.3.1, RFC 4585 6.4)
BLOCK_SIZE = 24
MAX_NACK_ITEMS = 16  # FCIs in one NACK: 272 packets, more than a 1080p IDR
# Access units whose packets a report can still be mapped for: ~30 s of 30 fps video,
# far longer than any report interval.
MAP_UNITS = 1024


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


class SequenceMap:
    """Which packets in made which packets out, one access unit at a time (the translator
    rebuilds packets per access unit, so a packet out maps to its unit's packets in). Input
    sequence numbers are kept extended (with their wrap count), as report blocks carry
    them."""

    __slots__ = ("_highest", "_units")

    def __init__(self) -> None:
        self._units: deque[tuple[int, int, int, int]] = deque(maxlen=MAP_UNITS)
        self._highest: int | None = None  # extended input sequence number

    def add(self, out_first: int, out_count: int, in_first: int, in_last: int) -> None:
        if self._highest is None:
            last = in_last
        else:
            ahead = (in_last - self._highest) & 0xFFFF
            last = self._highest + (ahead if ahead < 0x8000 else ahead - 0x10000)
        self._highest = last if self._highest is None else max(self._highest, last)
        self._units.append((out_first, out_count, last - ((in_last - in_first) & 0xFFFF), last))

    def inputs(self, out_seq: int) -> tuple[int, int] | None:
        """The extended input sequence numbers (first, last) of the unit that packet out
        `out_seq` belongs to; None if it is not one of the units remembered."""
        for out_first, count, first, last in reversed(self._units):
            if (out_seq - out_first) & 0xFFFF < count:
                return first, last
        return None


def map_block(block: ReportBlock, ours: int, source: int | None,
              sequences: SequenceMap) -> ReportBlock | None:
    """A report block about the gateway's stream `ours` as one about `source`, the stream
    it was made from: highest sequence number mapped, loss and jitter as reported (the loss
    rate carries over; the counts are of repacketised packets). None for a block about
    any other stream or one whose packets are no longer mapped."""
    if block.ssrc != ours or source is None:
        return None
    inputs = sequences.inputs(block.highest & 0xFFFF)
    if inputs is None:
        return None
    return ReportBlock(source, block.fraction_lost, block.lost, inputs[1] & 0xFFFFFFFF,
                       block.jitter, block.lsr, block.dlsr)
