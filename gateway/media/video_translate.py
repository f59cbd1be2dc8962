"""H.264 video between Lync/SfB ([MS-H264PF], X-H264UC) and standard SIP endpoints (RFC 6184
H264, packetization-mode=1) without transcoding. Sans-I/O: packets and the time in, packets
out. Payloads cross as they came wherever they can: only the RTP header is rewritten, and
only the packets that carry something one side has and the other must not see are taken
apart and made again.

- From Lync (`FromLync`), per packet as it comes: single NAL unit packets and FU-As of AVC
  units pass, packets of PACSI, prefix and SVC units only are dropped, and a STAP-A is
  rebuilt only when it mixes the two.
- Toward Lync (`ToLync`), per access unit: the PACSI that starts it states how many NAL units
  follow (the Bitstream Info SEI), which is known only once the unit is whole, so its
  packets are held until its last one (a burst: the time one picture takes to arrive) and
  then sent with the PACSI first and a prefix unit before each slice; FU-As pass unchanged.

Sequence numbers: a packet out is numbered as the packet in it came from plus a shift that
changes only where a packet is dropped or added (`SequenceMap`), so a packet lost on the way
in leaves its gap on the way out, where the receiver's depacketiser and loss reports see it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from gateway.media.h264 import (
    AVC_TYPES,
    FU_A,
    NAL_IDR,
    NAL_PACSI,
    NAL_PREFIX,
    NAL_SLICE_EXT,
    NAL_SPS,
    NAL_SUBSET_SPS,
    STAP_A,
    VCL_TYPES,
    H264Error,
    Sps,
    packetize,
    parse_sps,
    split_fu_a,
    split_stap_a,
    stap_a,
)
from gateway.media.h264uc import (
    FPS_INDEX,
    BitstreamInfo,
    LayerDescription,
    PacsiWriter,
    StreamLayout,
    prefix_nal,
    stream_layout_sei,
)
from gateway.media.h264uc import pacsi as build_pacsi
from gateway.media.rtp import MIN_RTP, rtp_header_length
from gateway.media.video_rtcp import SequenceMap

DEFAULT_MTU = 1200  # RTP payload octets: leaves room for SRTP, TURN and IPv6 under 1500
ACCESS_UNIT_TIMEOUT = 0.5  # seconds an access unit may stay open without its marker
MAX_PACKETS_PER_ACCESS_UNIT = 2048  # a 1080p IDR is a few hundred packets of 1200 octets
# What stands in for a marked packet from Lync that carried Lync-only units alone: a filler
# data NAL unit (H.264 7.3.2.7: type 12, no 0xFF octets, the RBSP stop bit), which may end
# an access unit and which decoders discard, so that the marker still closes the unit.
FILLER = bytes([12, 0x80])

# An RTP header without CSRCs or extension: V=2, M and PT, seq, timestamp, SSRC.
_HEAD = struct.Struct("!BBH4s4s")

# The size of the PACSI toward Lync (one Stream Layout description, Bitstream Info): every
# field has a fixed width, so it is the same for every access unit.
PACSI_SIZE = len(build_pacsi(0, False, 0, BitstreamInfo(0, 0), stream_layout_sei(
    StreamLayout(frozenset({0}), (LayerDescription(16, 16, 16, 16, 0, 0),)))))

# Why each NAL unit type Lync sends is not handed to an AVC decoder.
DROPPED_NALS = {NAL_PACSI: "pacsi", NAL_PREFIX: "prefix", NAL_SUBSET_SPS: "subset_sps",
                NAL_SLICE_EXT: "svc_slice"}
# The units whose FU-A start FromLync hands on without a look at them (an SPS is read).
PLAIN_STARTS = AVC_TYPES - {NAL_SPS}


def _bump(counter: dict[str, int], kind: str, by: int = 1) -> None:
    counter[kind] = counter.get(kind, 0) + by


@dataclass
class VideoStats:
    """One direction of one video stream through a translator."""

    packets_in: int = 0
    packets_out: int = 0
    octets_out: int = 0  # RTP payload octets, as a sender report counts them
    packets_lost: int = 0  # sequence numbers that never came
    access_units_out: int = 0
    key_frames: int = 0  # access units out with an IDR picture
    packets_dropped: dict[str, int] = field(default_factory=dict)  # short, ssrc, late ...
    nals_dropped: dict[str, int] = field(default_factory=dict)  # pacsi, prefix, unknown ...
    frames_dropped: dict[str, int] = field(default_factory=dict)  # loss, incomplete ...
    width: int = 0  # of the last SPS seen
    height: int = 0

    def as_dict(self) -> dict[str, object]:
        return {"packets_in": self.packets_in, "packets_out": self.packets_out,
                "octets_out": self.octets_out, "packets_lost": self.packets_lost,
                "access_units_out": self.access_units_out, "key_frames": self.key_frames,
                "packets_dropped": dict(self.packets_dropped),
                "nals_dropped": dict(self.nals_dropped),
                "frames_dropped": dict(self.frames_dropped),
                "width": self.width, "height": self.height}


def _payload_bounds(packet: bytes) -> tuple[int, int] | str:
    """Where the payload of an RTP packet starts and ends, or the counter a malformed
    packet goes to."""
    if len(packet) < MIN_RTP:
        return "short"
    if packet[0] >> 6 != 2:
        return "version"
    start = rtp_header_length(packet)
    end = len(packet)
    if packet[0] & 0x20:  # RFC 3550 5.1: the last octet counts the padding, itself included
        end -= packet[-1]
        if packet[-1] == 0:
            return "padding"
    if end <= start:
        return "short" if start >= len(packet) or not packet[0] & 0x20 else "padding"
    return start, end


class _Translator:
    """What both directions share: counters, the SSRC followed, the input's sequence
    numbers extended, and the writer of packets out with their shift."""

    stats: VideoStats
    key_frame_wanted: bool
    # Which packets in made which packets out: what RTCP about the output is mapped with.
    sequences: SequenceMap

    def __init__(self, ssrc: int | None, payload_type: int | None, mtu: int,
                 first_sequence: int) -> None:
        """`ssrc` and `payload_type` are what the output carries (None: the input's)."""
        self.stats = VideoStats()
        self.key_frame_wanted = True  # until an IDR has gone out
        self.sequences = SequenceMap()
        self.mtu = mtu
        self._longest = MIN_RTP + mtu  # the longest packet in passed whole (plain header)
        self._ssrc = ssrc
        self._payload_type = payload_type
        self._first_sequence = first_sequence & 0xFFFF
        self._source: int | None = None
        self._source_octets = b""
        self._ssrc_out = b""
        self._pt_out = 0
        self._next_in = 0  # the extended sequence number expected next
        self._shift = 0  # sequence number out - in
        # The SPS last read: an encoder sends the same one with every key frame, and reading
        # one takes ~15 us, so the same one is not read again.
        self._sps_nal = b""

    @property
    def source(self) -> int | None:
        """The SSRC whose packets are translated (None before the first)."""
        return self._source

    def source_sequence(self, out_seq: int) -> int | None:
        """The extended sequence number of the packet in that packet out `out_seq` was made
        from (for one the translator added, the packet after it); None for a number not
        sent yet or no longer remembered."""
        newest = self._next_in - 1 + self._shift
        if (newest - out_seq) & 0xFFFF >= 0x8000:
            return None
        return self.sequences.inputs(out_seq)

    def _follow(self, packet: bytes) -> None:
        """Translate `packet`'s SSRC from here on: its sequence numbers start a new count,
        and the output's go on from where they were."""
        ssrc = int.from_bytes(packet[8:12], "big")
        seq = (packet[2] << 8) | packet[3]
        last_out = self._first_sequence - 1 if self._source is None else (
            self._next_in - 1 + self._shift)
        self._source, self._source_octets = ssrc, packet[8:12]
        self._ssrc_out = (self._ssrc if self._ssrc is not None else ssrc).to_bytes(4, "big")
        self._pt_out = (self._payload_type if self._payload_type is not None
                        else packet[1] & 0x7F)
        self._next_in = seq
        self._move_shift(seq, (last_out + 1 - seq) & 0xFFFF)

    def _payload(self, packet: bytes) -> tuple[int, int] | None:
        """Where `packet`'s payload starts and ends; None (counted) when it is malformed."""
        self.stats.packets_in += 1
        if len(packet) > MIN_RTP and packet[0] == 0x80:  # no padding, CSRCs or extension
            return MIN_RTP, len(packet)
        bounds = _payload_bounds(packet)
        if isinstance(bounds, str):
            _bump(self.stats.packets_dropped, bounds)
            return None
        return bounds

    def _number(self, packet: bytes) -> int:
        """`packet`'s sequence number, extended."""
        seq = (packet[2] << 8) | packet[3]
        expected = self._next_in
        if seq == expected & 0xFFFF:
            self._next_in = expected + 1
            return expected
        return self._extend(seq)

    def _extend(self, seq: int) -> int:
        """`seq` (not the one expected) extended; packets skipped are counted lost."""
        ahead = (seq - self._next_in) & 0xFFFF
        if ahead < 0x8000:
            self.stats.packets_lost += ahead
            self._next_in += ahead + 1
            return self._next_in - 1
        return self._next_in + ahead - 0x10000  # late, or a duplicate

    def _move_shift(self, in_seq: int, shift: int) -> None:
        """From packet in `in_seq` (extended) on, number packets out with `shift`."""
        self._shift = shift
        self.sequences.shift(in_seq + shift, in_seq)

    def _dropped(self, in_seq: int, kind: str) -> None:
        """Packet in `in_seq` gives nothing out: the ones after it close the gap."""
        _bump(self.stats.packets_dropped, kind)
        self._move_shift(in_seq + 1, self._shift - 1)

    def _write(self, payloads: list[bytes], in_seq: int, timestamp: bytes,
               marker: int) -> list[bytes]:
        """Packets out for `payloads`, made from packet in `in_seq` (extended): the last
        numbered for it and carrying `marker` (0x80 or 0), any before it pushing the shift
        on."""
        if len(payloads) == 1:
            return [self._packet(payloads[0], in_seq + self._shift, timestamp, marker)]
        extra = len(payloads) - 1
        if extra:
            self._move_shift(in_seq, self._shift + extra)
        return self._numbered(payloads, in_seq + self._shift - extra, timestamp, marker)

    def _numbered(self, payloads: list[bytes], seq: int, timestamp: bytes,
                  marker: int) -> list[bytes]:
        """Packets out for `payloads` (one at least) from sequence number `seq` on, `marker`
        on the last."""
        # A loop rather than a comprehension: most calls make one or two packets, for which
        # the comprehension's own frame costs more than the loop.
        last = len(payloads) - 1
        out = []
        for index in range(last):
            out.append(self._packet(payloads[index], seq + index, timestamp, 0))
        out.append(self._packet(payloads[last], seq + last, timestamp, marker))
        return out

    def _packet(self, payload: bytes, seq: int, timestamp: bytes, marker: int) -> bytes:
        """One packet out, counted."""
        stats = self.stats
        stats.packets_out += 1
        stats.octets_out += len(payload)
        return _HEAD.pack(0x80, self._pt_out | marker, seq & 0xFFFF, timestamp,
                          self._ssrc_out) + payload

    def _keep(self, nal: bytes) -> bool:
        """Whether an AVC decoder takes `nal`; a unit it does not is counted."""
        kind = nal[0] & 0x1F
        if kind in AVC_TYPES and nal[0] < 0x80 and len(nal) > 1:
            if kind == NAL_SPS and nal != self._sps_nal:
                self._note_sps(nal)
            return True
        why = DROPPED_NALS.get(kind)  # (no AVC type is among them)
        if why is None:
            why = "malformed" if nal[0] & 0x80 or len(nal) < 2 else "unknown"
        _bump(self.stats.nals_dropped, why)
        return False

    def _note_sps(self, nal: bytes) -> None:
        raise NotImplementedError


class FromLync(_Translator):
    """[MS-H264PF] from Lync -> RFC 6184 for the SIP endpoint, packet by packet: one SSRC of
    Lync's `x-ssrc-range` (the first seen in it, or `select`ed), its AVC base layer only
    (PACSI, prefix and SVC units dropped, also from inside STAP-As and FU-As). A packet lost
    on the way in is left for the SIP endpoint to see (a gap in the sequence numbers: its
    depacketiser drops the unit it cut, its decoder conceals), and a key frame is asked of
    Lync at once, as its receivers would: the pictures after it refer to what was lost."""

    def __init__(self, *, ssrc_range: tuple[int, int] | None = None,
                 ssrc: int | None = None, payload_type: int | None = None,
                 mtu: int = DEFAULT_MTU, first_sequence: int = 0) -> None:
        super().__init__(ssrc, payload_type, mtu, first_sequence)
        self._range = ssrc_range
        self._fu = -1  # the NAL unit type an FU-A in progress carries, -1 when none
        self._piece = -1  # that type when the unit is handed on: what its next pieces hold
        self._key_timestamp = b""  # of the last access unit counted as a key frame
        self._au_timestamp = b""  # of the last packet out
        self._unit = b""  # and the SSRC followed after it: what an FU-A's next piece has
        self._unmarked = False  # packets of the access unit went out, none with the marker

    def select(self, ssrc: int) -> None:
        """Follow another of Lync's SSRCs from its next packet."""
        if ssrc != self._source:
            self._range = (ssrc, ssrc)
            self._source, self._source_octets, self._unit = None, b"", b""
            self.key_frame_wanted = True

    def push(self, packet: bytes, now: float) -> list[bytes]:
        # Most packets, in the fewest steps: the next of the SSRC followed, a plain header,
        # and the next piece of an FU-A being handed on (FU header: S and R clear, its
        # type), or the start of one of an AVC unit other than an SPS with none in
        # progress; or a STAP-A of Lync's own units only (its PACSI), dropped.
        if (14 < len(packet) <= self._longest and packet[0] == 0x80
                and (packet[2] << 8 | packet[3]) == self._next_in & 0xFFFF):
            kind = packet[12] & 0x1F
            fu = packet[13]
            if kind != FU_A:
                if (kind == STAP_A and not packet[1] & 0x80 and self._fu < 0
                        and packet[8:12] == self._source_octets):
                    lync_only = self._lync_only(packet)
                    if lync_only is not None:
                        self.stats.packets_in += 1
                        in_seq = self._next_in
                        self._next_in = in_seq + 1
                        for why in lync_only:
                            _bump(self.stats.nals_dropped, why)
                        self._dropped(in_seq, "lync_only")
                        return []
            elif fu & 0xBF == self._piece and packet[4:12] == self._unit:
                if fu & 0x40:
                    self._fu = self._piece = -1
            elif (fu & 0xE0 == 0x80 and self._fu < 0 and packet[12] < 0x80
                    and fu & 0x1F in PLAIN_STARTS and packet[8:12] == self._source_octets):
                self._started(fu & 0x1F, packet[4:8])
            else:
                kind = 0
            if kind == FU_A:
                stats = self.stats
                stats.packets_in += 1
                stats.packets_out += 1
                stats.octets_out += len(packet) - MIN_RTP
                in_seq = self._next_in
                self._next_in = in_seq + 1
                marker = packet[1] & 0x80
                self._unmarked = not marker
                # `_packet`, written out: a call is a tenth of this path.
                return [_HEAD.pack(0x80, self._pt_out | marker,
                                   (in_seq + self._shift) & 0xFFFF, packet[4:8],
                                   self._ssrc_out) + packet[MIN_RTP:]]
        bounds = self._payload(packet)
        if bounds is None:
            return []
        start, end = bounds
        if packet[8:12] != self._source_octets and not self._accept(packet):
            return []
        expected = self._next_in
        in_seq = self._number(packet)
        if in_seq != expected:
            if in_seq < expected:
                # Its gap went out already, and the receiver had its key frame asked for.
                _bump(self.stats.packets_dropped, "late")
                return []
            self.key_frame_wanted = True  # what came between is lost
            self._fu = self._piece = -1
        timestamp = packet[4:8]
        marker = packet[1] & 0x80
        kind = packet[start] & 0x1F
        if kind == FU_A:
            payloads = self._fragment(packet[start:end], timestamp)
        else:
            if self._fu >= 0:
                self._fu = self._piece = -1
                _bump(self.stats.nals_dropped, "fu_truncated")  # the receiver drops its part
            if kind == STAP_A:
                payloads = self._aggregate(packet[start:end], timestamp)
            else:
                nal = packet[start:end]
                payloads = [nal] if self._keep(nal) else []
                if kind == NAL_IDR and payloads:
                    self._key_frame(timestamp)
        if not payloads:
            if not (marker and self._unmarked and timestamp == self._au_timestamp):
                self._dropped(in_seq, "lync_only")
                return []
            payloads = [FILLER]
        self._unmarked = not marker
        self._out_of(timestamp)
        return self._write(payloads, in_seq, timestamp, marker)

    def _accept(self, packet: bytes) -> bool:
        """The first packet of an SSRC in the range is followed; any other SSRC dropped."""
        if self._source is None:
            low, high = self._range if self._range is not None else (0, 0xFFFFFFFF)
            if low <= int.from_bytes(packet[8:12], "big") <= high:
                self._follow(packet)
                self._fu = self._piece = -1
                return True
        _bump(self.stats.packets_dropped, "ssrc")
        return False

    def _started(self, inner: int, timestamp: bytes) -> None:
        """What `_fragment` and `push` do for the start of an FU-A of an AVC unit (type
        `inner`, not an SPS) that comes in sequence with no unit in progress."""
        self._fu = self._piece = inner
        if inner == NAL_IDR:
            self._key_frame(timestamp)
        self._out_of(timestamp)

    def _out_of(self, timestamp: bytes) -> None:
        """A packet goes out with `timestamp`: another access unit when it changed."""
        if timestamp != self._au_timestamp:
            self._au_timestamp = timestamp
            self._unit = timestamp + self._source_octets
            self.stats.access_units_out += 1

    @staticmethod
    def _lync_only(packet: bytes) -> list[str] | None:
        """Why each unit of the STAP-A `packet` (a plain header) is not for an AVC decoder,
        when none of them is (what `_aggregate` counts before `push` drops the packet);
        None when one is, or when the STAP-A is malformed: `push` looks at it in full."""
        whys = []
        at, end = MIN_RTP + 1, len(packet)
        while at < end:
            size = (packet[at] << 8 | packet[at + 1]) if at + 2 <= end else 0
            at += 2
            if size == 0 or at + size > end:
                return None
            why = DROPPED_NALS.get(packet[at] & 0x1F)
            if why is None:
                return None
            whys.append(why)
            at += size
        return whys

    def _fragment(self, payload: bytes, timestamp: bytes) -> list[bytes]:
        """An FU-A: passed when it carries an AVC unit whose start came."""
        if len(payload) < 3 or payload[1] & 0xC0 == 0xC0:
            _bump(self.stats.nals_dropped, "fu_malformed")
            return []
        inner = payload[1] & 0x1F
        if payload[1] & 0x80:
            if self._fu >= 0:
                _bump(self.stats.nals_dropped, "fu_truncated")
            head = (payload[0] & 0xE0) | inner
            # An AVC unit other than an SPS is kept without a word: its first two octets
            # are made only for `_keep` to judge (and count) the others.
            kept = (inner in AVC_TYPES and inner != NAL_SPS and not head & 0x80) or (
                self._keep(bytes((head, payload[2]))))
            self._fu, self._piece = inner, inner if kept else -1
            if kept and inner == NAL_IDR:
                self._key_frame(timestamp)
        elif self._fu != inner:
            _bump(self.stats.nals_dropped, "fu_truncated")  # its start never came
            return []
        kept = self._piece == inner
        if payload[1] & 0x40:
            self._fu = self._piece = -1
        return split_fu_a(payload, self.mtu) if kept else []

    def _aggregate(self, payload: bytes, timestamp: bytes) -> list[bytes]:
        """A STAP-A: as it is when every unit in it is for an AVC decoder, rebuilt from those
        that are when some are not."""
        try:
            nals = split_stap_a(payload)
        except H264Error as error:
            _bump(self.stats.nals_dropped, error.kind)
            return []
        kept = [nal for nal in nals if self._keep(nal)]
        if not kept:
            return []  # Lync's own units only: its PACSI and prefix units, most often
        if any(nal[0] & 0x1F == NAL_IDR for nal in kept):
            self._key_frame(timestamp)
        if len(kept) == len(nals):
            return [payload]
        return packetize(kept, self.mtu)

    def _key_frame(self, timestamp: bytes) -> None:
        if timestamp != self._key_timestamp:
            self._key_timestamp = timestamp
            self.stats.key_frames += 1
        self.key_frame_wanted = False

    def _note_sps(self, nal: bytes) -> None:
        try:
            sps = parse_sps(nal)
        except H264Error:
            return  # handed on all the same: the decoder is the judge of its own input
        self._sps_nal = nal
        self.stats.width, self.stats.height = sps.width, sps.height


@dataclass(slots=True)
class _Held:
    """An access unit from the SIP side, its packets out made as its packets come (but for
    the first, which carries the PACSI), waiting for its last one."""

    timestamp: bytes
    opened: float
    first_in: int  # the extended number of its first packet
    shift: int  # the translator's shift before it
    next_in: int = 0  # the extended number its next packet must have
    dropped: int = 0  # its packets counted as giving nothing
    packets: list[bytes] = field(default_factory=list)  # out, after the first packet's
    # What the first packet in that gives anything gives: its NAL units (a prefix before
    # each slice), the FU-A payloads after them (none when it has no FU-A), whether the
    # PACSI and the units fit one STAP-A, and the first sequence number out kept for the
    # packets made from them.
    lead: tuple[list[bytes], list[bytes], bool, int] | None = None
    # What its PACSI says: the units kept (prefixes added: as many as slices), the highest
    # NRI among them, whether a slice is a reference, whether they are IDR slices.
    units: int = 0
    slices: int = 0
    nri: int = 0
    reference: bool = False
    idr: bool = False
    fu: int = 0  # the NAL unit type of the FU-A in progress, 0 when none
    piece: int = -1  # that type while the unit is whole so far: what its next pieces hold
    damage: str = ""  # why it is to be dropped, once known


class ToLync(_Translator):
    """RFC 6184 from the SIP endpoint -> [MS-H264PF] for Lync, an access unit at a time:
    it starts with a PACSI carrying a full Stream Layout (the picture size of the last SPS,
    `bitrate`, `fps`) and a Bitstream Info SEI (its NAL unit count), each slice gets its
    prefix NAL unit, FU-As pass unchanged (cut again when larger than `mtu`). Each packet
    out is made as its packet in comes, but for the one the PACSI goes in, and all are sent
    with the unit's last. A unit with a packet missing (or out of order) is dropped whole,
    its gap left in the sequence numbers, and a key frame asked of the SIP endpoint: what
    Lync decoded of it would be wrong, and so would what refers to it."""

    def __init__(self, *, ssrc: int, payload_type: int, bitrate: int, fps: float = 30.0,
                 mtu: int = DEFAULT_MTU, first_sequence: int = 0) -> None:
        if fps not in FPS_INDEX:
            raise ValueError(f"fps must be one of {sorted(FPS_INDEX)}")
        super().__init__(ssrc, payload_type, mtu, first_sequence)
        self._bitrate = bitrate
        self._fps_index = FPS_INDEX[fps]
        self._sps: Sps | None = None
        self._pacsi = PacsiWriter()  # with the Stream Layout SEI for the last SPS
        self._ref_frames = 0
        self._donc = 0
        self._held: _Held | None = None
        self._done = -1  # the extended number of the last packet in of units done with

    def push(self, packet: bytes, now: float) -> list[bytes]:
        held = self._held
        # Most packets, in the fewest steps: the next of the SSRC followed, a plain header,
        # the next piece of an FU-A of a unit whole so far (FU header: S and R clear, its
        # type), made into its packet out at once.
        if (held is not None and 14 < len(packet) <= self._longest and packet[0] == 0x80
                and packet[12] & 0x1F == FU_A and packet[13] & 0xBF == held.piece
                and packet[8:12] == self._source_octets
                and (packet[2] << 8 | packet[3]) == self._next_in & 0xFFFF
                and packet[4:8] == held.timestamp
                and len(held.packets) < MAX_PACKETS_PER_ACCESS_UNIT):
            stats = self.stats
            stats.packets_in += 1
            stats.packets_out += 1
            stats.octets_out += len(packet) - MIN_RTP
            in_seq = self._next_in
            self._next_in = held.next_in = in_seq + 1
            if packet[13] & 0x40:
                held.fu, held.piece = 0, -1
            marker = packet[1] & 0x80
            # `_packet`, written out as in FromLync.push.
            held.packets.append(_HEAD.pack(
                0x80, self._pt_out | marker, (in_seq + self._shift) & 0xFFFF, held.timestamp,
                self._ssrc_out) + packet[MIN_RTP:])
            return self._close(held, "") if marker else []
        # The start of an FU-A of an AVC unit that opens the next access unit (S set, E, R
        # and F clear, no marker): the unit's lead packet, as `_take` makes it.
        if (held is None and 14 < len(packet) <= self._longest and packet[0] == 0x80
                and not packet[1] & 0x80
                and packet[12] & 0x9F == FU_A and packet[13] & 0xE0 == 0x80
                and packet[13] & 0x1F in AVC_TYPES
                and packet[8:12] == self._source_octets
                and (packet[2] << 8 | packet[3]) == self._next_in & 0xFFFF):
            self.stats.packets_in += 1
            in_seq = self._next_in
            self._next_in = in_seq + 1
            held = self._held = _Held(packet[4:8], now, in_seq, self._shift, in_seq + 1)
            inner = packet[13] & 0x1F
            held.fu = held.piece = inner
            units: list[bytes] = []
            self._count(held, packet[12] & 0xE0 | inner, units)
            self._lead(held, in_seq, units, [packet[MIN_RTP:]])
            return []
        bounds = self._payload(packet)
        if bounds is None:
            return []
        start, end = bounds
        if packet[8:12] != self._source_octets:
            # A SIP endpoint that restarts its stream (new SSRC) starts a new sequence.
            self._held = None
            self._follow(packet)
            self._done = self._next_in - 1
        in_seq = self._number(packet)
        stats = self.stats
        if in_seq <= self._done:
            _bump(stats.packets_dropped, "late")  # of a unit already sent or dropped
            return []
        out: list[bytes] = []
        timestamp = packet[4:8]
        held = self._held
        if held is not None and held.timestamp != timestamp:
            # Some senders leave the marker off: the unit is whole when nothing is missing
            # up to this packet, the first of the next one.
            out = self._close(held, "" if in_seq == held.next_in else "incomplete")
            held = None
        if held is None:
            # Packets lost before it are the last unit's (a marker among them) or this
            # one's first: as a unit whole from here is what recovers from a loss (an IDR
            # after a key frame request), it is taken as starting here.
            held = self._held = _Held(timestamp, now, in_seq, self._shift, in_seq)
        if in_seq < held.next_in:
            _bump(stats.packets_dropped, "late")  # its unit is damaged already, or whole
            return out
        if in_seq != held.next_in:
            held.damage = "loss"
        held.next_in = in_seq + 1
        if held.damage:
            held.piece = -1
        elif len(held.packets) >= MAX_PACKETS_PER_ACCESS_UNIT:
            held.damage = "oversize"
        else:
            try:
                self._take(held, in_seq, packet[start:end], packet[1] & 0x80)
            except H264Error as error:
                # A unit cut or bent inside the picture: what decodes of it would be wrong.
                _bump(stats.nals_dropped, error.kind)
                held.damage = "malformed"
                held.piece = -1
        if packet[1] & 0x80:
            out += self._close(held, "")
        return out

    def poll(self, now: float) -> None:
        """Drop an access unit left open past ACCESS_UNIT_TIMEOUT."""
        if self._held is not None and now - self._held.opened > ACCESS_UNIT_TIMEOUT:
            self._close(self._held, "incomplete")

    def _take(self, held: _Held, in_seq: int, payload: bytes, marker: int) -> None:
        """The packets out for packet in `in_seq`, into `held`; raises H264Error for a
        payload that breaks its unit."""
        kind = payload[0] & 0x1F
        units: list[bytes] = []
        fu = b""
        if kind == FU_A:
            if len(payload) < 3 or payload[1] & 0xC0 == 0xC0:
                raise H264Error("fu_malformed")
            inner = payload[1] & 0x1F
            if payload[1] & 0x80:
                head = (payload[0] & 0xE0) | inner
                if held.fu or inner not in AVC_TYPES or head & 0x80:
                    raise H264Error("fu_malformed" if not held.fu else "fu_truncated")
                self._count(held, head, units)
            elif held.fu != inner:
                raise H264Error("fu_truncated")
            held.fu = 0 if payload[1] & 0x40 else inner
            held.piece = held.fu or -1
            fu = payload
        elif held.fu:
            raise H264Error("fu_truncated")
        elif 24 < kind < 30:
            raise H264Error("packetization")  # interleaved mode only
        else:
            for nal in split_stap_a(payload) if kind == STAP_A else (payload,):
                if self._keep(nal):
                    self._count(held, nal[0], units)
                    units.append(nal)
            if not units:
                held.dropped += 1
                self._dropped(in_seq, "no_avc")
                return
        if held.lead is None:
            self._lead(held, in_seq, units, split_fu_a(fu, self.mtu) if fu else [])
            return
        payloads = packetize(units, self.mtu) if units else []
        if fu:
            payloads += split_fu_a(fu, self.mtu)
        held.packets += self._write(payloads, in_seq, held.timestamp, marker)

    def _lead(self, held: _Held, in_seq: int, units: list[bytes], pieces: list[bytes]) -> None:
        """Packet in `in_seq`, the first of `held` that gives anything, gives `units` and
        the FU-A payloads `pieces`. The PACSI's size does not depend on what it says, so
        the packets it and these make can be numbered now and made at the end."""
        fits = PACSI_SIZE + 3 + len(b"".join(units)) + 2 * len(units) <= self.mtu
        count = 1 if fits else len(packetize([bytes(PACSI_SIZE), *units], self.mtu))
        count += len(pieces)
        self._move_shift(in_seq, self._shift + count - 1)
        held.lead = (units, pieces, fits, in_seq + self._shift - count + 1)

    @staticmethod
    def _count(held: _Held, head: int, units: list[bytes]) -> None:
        """A unit whose header octet is `head` is kept: what the PACSI says of it; a slice
        gets its prefix unit."""
        held.units += 1
        held.nri = max(held.nri, head & 0x60)
        if head & 0x1F in VCL_TYPES:
            held.units += 1
            held.slices += 1
            held.reference = held.reference or bool(head & 0x60)
            held.idr = head & 0x1F == NAL_IDR  # the slices of a picture all are, or none
            units.append(prefix_nal(head, held.idr))

    def _close(self, held: _Held, damage: str) -> list[bytes]:
        """The packets of `held`, done with: none when it is not whole (`damage`, or what
        was found in it, says why)."""
        self._held = None
        self._done = held.next_in - 1
        if held.fu and not (damage or held.damage):
            _bump(self.stats.nals_dropped, "fu_truncated")
            damage = "malformed"
        damage = damage or held.damage
        if damage or not held.slices or self._sps is None or held.lead is None:
            return self._unsent(held, damage or ("no_sps" if held.slices else ""))
        units, pieces, fits, lead_seq = held.lead
        if held.reference:
            self._ref_frames = (self._ref_frames + 1) & 0xFF
        pacsi = self._pacsi.pacsi(held.nri >> 5, held.idr, self._donc, self._ref_frames,
                                  held.units)
        self._donc = (self._donc + held.units) & 0xFFFF
        stats = self.stats
        stats.access_units_out += 1
        if held.idr:
            stats.key_frames += 1
            self.key_frame_wanted = False
        payloads = [stap_a([pacsi, *units]) if units else pacsi] if fits else packetize(
            [pacsi, *units], self.mtu)
        out = self._numbered(payloads + pieces if pieces else payloads, lead_seq,
                             held.timestamp, 0 if held.packets else 0x80)
        if held.packets:
            out += held.packets
            if not out[-1][1] & 0x80:  # its sender left the marker off
                last = bytearray(out[-1])
                last[1] |= 0x80
                out[-1] = bytes(last)
        return out

    def _lost(self, kind: str) -> list[bytes]:
        _bump(self.stats.frames_dropped, kind)
        self.key_frame_wanted = True
        return []

    def _unsent(self, held: _Held, damage: str) -> list[bytes]:
        """Nothing of `held` goes out: a damaged unit leaves the gap of its packets in the
        sequence numbers (the receiver sees the loss there); one with nothing a decoder
        can use, or no SPS to describe it, closes it."""
        if damage and damage != "no_sps":
            self._move_shift(held.next_in, held.shift)
        else:
            count = held.next_in - held.first_in
            _bump(self.stats.packets_dropped, "no_avc", count - held.dropped)
            self._move_shift(held.next_in, held.shift - count)
        return self._lost(damage) if damage else []

    def _note_sps(self, nal: bytes) -> None:
        try:
            sps = parse_sps(nal)
        except H264Error:
            _bump(self.stats.nals_dropped, "sps_unreadable")
            return
        self._sps_nal = nal
        if sps != self._sps:
            self._sps = sps
            self._pacsi = PacsiWriter(stream_layout_sei(StreamLayout(frozenset({0}), (
                LayerDescription(sps.coded_width, sps.coded_height, sps.width, sps.height,
                                 self._bitrate, self._fps_index,
                                 constrained_baseline=_constrained_baseline(sps)),))))
        self.stats.width, self.stats.height = sps.width, sps.height


def _constrained_baseline(sps: Sps) -> bool:
    """Constrained Baseline: Baseline (66) with constraint_set1_flag, or any profile with
    constraint_set0 and constraint_set1 both set (H.264 A.2.1.1)."""
    return (sps.profile_idc == 66 and bool(sps.constraints & 0x40)) or (
        sps.constraints & 0xC0 == 0xC0)
