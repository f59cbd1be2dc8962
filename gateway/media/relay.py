"""The relay's core, free of sockets: a packet from one side of a stream goes through
unprotect -> check -> payload-type remap -> count -> protect, and out to the other side.

A `Side` is where one leg's packets go (its `send`) and how they are secured; endpoints
(`gateway.media.endpoints`) feed packets in with `StreamRelay.from_a` / `from_b`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.media.errors import PacketError
from gateway.media.rtp import StreamStats, check, is_rtcp
from gateway.media.srtp import SrtpContext

Send = Callable[[bytes, bool], None]  # (packet, is RTCP)
# libsrtp keeps a stream per SSRC it protects and finds it by a linear search, so a sender
# that keeps changing SSRC would make every packet slower and memory grow without end. Lync
# video announces about 100 (a=x-ssrc-range); a SIP endpoint uses a few.
MAX_SSRCS = 128


@dataclass
class Side:
    name: str  # "lync" / "sip": for logs and counters
    send: Send
    srtp_in: SrtpContext | None = None  # unprotects what this side sends us
    srtp_out: SrtpContext | None = None  # protects what we send this side
    # payload type as the other side numbers it -> as this side numbers it
    pt_map: dict[int, int] = field(default_factory=dict)


class StreamRelay:
    def __init__(self, media: str, a: Side, b: Side, clock: Callable[[], float]) -> None:
        self.media = media
        self.a, self.b = a, b
        self.clock = clock
        self.started = clock()
        self.stats = {(a.name, b.name): StreamStats(), (b.name, a.name): StreamStats()}
        self._a_to_b = self.stats[(a.name, b.name)]
        self._b_to_a = self.stats[(b.name, a.name)]

    def from_a(self, packet: bytes, rtcp: bool | None = None) -> None:
        self._forward(packet, rtcp, self.a, self.b, self._a_to_b)

    def from_b(self, packet: bytes, rtcp: bool | None = None) -> None:
        self._forward(packet, rtcp, self.b, self.a, self._b_to_a)

    def _forward(self, packet: bytes, rtcp: bool | None, src: Side, dst: Side,
                 stats: StreamStats) -> None:
        if rtcp is None:  # rtcp-mux: tell by the packet type
            rtcp = is_rtcp(packet)
        clear = self._open(packet, rtcp, src, stats)
        if clear is None:
            return
        if not rtcp:
            pt = clear[1] & 0x7F
            mapped = dst.pt_map.get(pt, pt)
            if mapped != pt:
                clear = b"%c%c" % (clear[0], (clear[1] & 0x80) | mapped) + clear[2:]
        self._deliver(clear, rtcp, dst, stats)

    @staticmethod
    def _open(packet: bytes, rtcp: bool, src: Side, stats: StreamStats) -> bytes | None:
        """`packet` as `src` sent it, unprotected and checked; None (counted) if unusable."""
        try:
            if src.srtp_in is not None:
                packet = src.srtp_in.unprotect(packet, rtcp)
            check(packet, rtcp)
        except PacketError as exc:
            stats.drop(exc.kind)
            return None
        return packet

    def _deliver(self, packet: bytes, rtcp: bool, dst: Side, stats: StreamStats) -> None:
        """`packet` protected for `dst`, counted and sent."""
        try:
            if dst.srtp_out is None:
                out = packet
            else:
                if not rtcp and packet[8:12] not in stats.ssrcs:
                    if len(stats.ssrcs) >= MAX_SSRCS:
                        raise PacketError("ssrc")
                    stats.ssrcs.add(packet[8:12])
                out = dst.srtp_out.protect(packet, rtcp)
        except PacketError as exc:
            stats.drop(exc.kind)
            return
        now = self.clock()
        if rtcp:
            stats.rtcp(packet, now)
        else:
            stats.rtp(packet, now)
        dst.send(out, rtcp)

    def silent_for(self, now: float) -> float:
        """Seconds since the stream last carried a packet in any direction (since the start
        if never): a call on hold still has RTCP, a dead one has nothing."""
        last = max(s.last_packet for s in self.stats.values()) or self.started
        return now - last
