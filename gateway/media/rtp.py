"""What the relay needs to know of RTP and RTCP packets (RFC 3550, RFC 5761), and the
per-stream counters the CDR and the status API read."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.media.errors import PacketError

MIN_RTP = 12
MIN_RTCP = 8


def is_rtcp(packet: bytes) -> bool:
    """On a multiplexed port, RTCP packet types 192-223 sit where RTP's marker and payload
    type are (RFC 5761 4)."""
    return len(packet) > 1 and 192 <= packet[1] <= 223


def check(packet: bytes, rtcp: bool) -> None:
    """Raise PacketError for what no RTP stack would accept: too short for its header
    (RTP's includes the CSRC list and the header extension its first octet announces,
    RFC 3550 5.1, 5.3.1), or not version 2."""
    if len(packet) < (MIN_RTCP if rtcp else MIN_RTP):
        raise PacketError("short")
    if packet[0] >> 6 != 2:
        raise PacketError("version")
    # Most packets have neither CSRCs nor an extension: their 12 octets are checked above.
    if not rtcp and packet[0] & 0x1F and len(packet) < rtp_header_length(packet):
        raise PacketError("short")


def rtp_header_length(packet: bytes) -> int:
    """Octets up to the payload of an RTP packet of at least MIN_RTP octets (more than the
    packet holds when it is truncated)."""
    length = MIN_RTP + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10:
        if len(packet) < length + 4:
            return length + 4
        length += 4 + 4 * ((packet[length + 2] << 8) | packet[length + 3])
    return length


@dataclass
class StreamStats:
    """One direction of one stream."""

    packets: int = 0
    octets: int = 0
    rtcp_packets: int = 0
    last_packet: float = 0.0
    dropped: dict[str, int] = field(default_factory=dict)  # short, version, auth ...
    ssrcs: set[bytes] = field(default_factory=set)  # those SRTP protection has seen
    _base: int | None = None
    _highest: int = 0  # extended: cycles * 65536 + sequence number

    @property
    def lost(self) -> int:
        """Expected minus received (RFC 3550 A.3): a late packet is not lost."""
        if self._base is None:
            return 0
        return max(0, self._highest - self._base + 1 - self.packets)

    def rtp(self, packet: bytes, now: float) -> None:
        self.packets += 1
        self.octets += len(packet)
        self.last_packet = now
        seq = (packet[2] << 8) | packet[3]
        if self._base is None:
            self._base = self._highest = seq
            return
        ahead = (seq - self._highest) & 0xFFFF
        if 0 < ahead < 0x8000:  # newer (possibly across a wrap); older ones change nothing
            self._highest += ahead

    def rtcp(self, packet: bytes, now: float) -> None:
        self.rtcp_packets += 1
        self.octets += len(packet)
        self.last_packet = now

    def drop(self, kind: str) -> None:
        self.dropped[kind] = self.dropped.get(kind, 0) + 1

    def as_dict(self) -> dict[str, object]:
        return {"packets": self.packets, "bytes": self.octets, "rtcp_packets": self.rtcp_packets,
                "lost": self.lost, "last_packet": self.last_packet,
                "dropped": dict(self.dropped)}
