"""H.264 video between Lync/SfB ([MS-H264PF], X-H264UC) and standard SIP endpoints (RFC 6184
H264, packetization-mode=1) without transcoding: access units are reassembled, their NAL
units filtered or wrapped, and packetised again for the other side with sequence numbers
of its own and the timestamps kept. Sans-I/O: packets and the time in, packets out.

Why whole access units: a NAL unit Lync sends may sit in a STAP-A with the PACSI or be an
SVC unit cut into FU-As; rebuilding the packets from complete units is what lets the output
have neither gaps nor half-dropped units, and lets a damaged picture be dropped whole
rather than handed on broken. It costs the time one picture's packets take to arrive,
which is a burst."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.media.h264 import (
    AVC_TYPES,
    NAL_IDR,
    NAL_PACSI,
    NAL_PREFIX,
    NAL_SLICE_EXT,
    NAL_SPS,
    NAL_SUBSET_SPS,
    VCL_TYPES,
    H264Error,
    Reassembler,
    Sps,
    packetize,
    parse_sps,
)
from gateway.media.h264uc import (
    FPS_INDEX,
    BitstreamInfo,
    LayerDescription,
    StreamLayout,
    prefix_nal,
)
from gateway.media.h264uc import pacsi as build_pacsi
from gateway.media.rtp import MIN_RTP, rtp_header_length
from gateway.media.video_rtcp import SequenceMap

DEFAULT_MTU = 1200  # RTP payload octets: leaves room for SRTP, TURN and IPv6 under 1500
ACCESS_UNIT_TIMEOUT = 0.5  # seconds an access unit may stay open without its marker
MAX_PACKETS_PER_ACCESS_UNIT = 2048  # a 1080p IDR is a few hundred packets of 1200 octets

# Why each NAL unit type Lync sends is not handed to an AVC decoder.
DROPPED_NALS = {NAL_PACSI: "pacsi", NAL_PREFIX: "prefix", NAL_SUBSET_SPS: "subset_sps",
                NAL_SLICE_EXT: "svc_slice"}


def _bump(counter: dict[str, int], kind: str, by: int = 1) -> None:
    counter[kind] = counter.get(kind, 0) + by


@dataclass
class VideoStats:
    """One direction of one video stream through a translator."""

    packets_in: int = 0
    packets_out: int = 0
    octets_out: int = 0  # RTP payload octets, as a sender report counts them
    access_units_out: int = 0
    key_frames: int = 0  # access units out with an IDR picture
    packets_dropped: dict[str, int] = field(default_factory=dict)  # short, ssrc, late ...
    nals_dropped: dict[str, int] = field(default_factory=dict)  # pacsi, prefix, unknown ...
    frames_dropped: dict[str, int] = field(default_factory=dict)  # loss, incomplete ...
    width: int = 0  # of the last SPS seen
    height: int = 0

    def as_dict(self) -> dict[str, object]:
        return {"packets_in": self.packets_in, "packets_out": self.packets_out,
                "octets_out": self.octets_out,
                "access_units_out": self.access_units_out, "key_frames": self.key_frames,
                "packets_dropped": dict(self.packets_dropped),
                "nals_dropped": dict(self.nals_dropped),
                "frames_dropped": dict(self.frames_dropped),
                "width": self.width, "height": self.height}


@dataclass(slots=True)  # one a packet: a frozen one costs more to make
class _Rtp:
    marker: bool
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes


def _parse_rtp(packet: bytes) -> _Rtp | str:
    """The fields a translator needs, or the counter a malformed packet goes to."""
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
    return _Rtp(bool(packet[1] & 0x80), packet[1] & 0x7F, (packet[2] << 8) | packet[3],
                int.from_bytes(packet[4:8], "big"), int.from_bytes(packet[8:12], "big"),
                packet[start:end])


@dataclass(slots=True)
class _AccessUnit:
    timestamp: int
    opened: float
    first_sequence: int
    packets: dict[int, bytes] = field(default_factory=dict)  # offset from first -> payload


@dataclass(frozen=True, slots=True)
class _Complete:
    timestamp: int
    nals: list[bytes]
    first_sequence: int  # of the packets it came in
    last_sequence: int


class _Assembly:
    """Access units out of one SSRC's packets: opened by a new timestamp, complete at the
    marker when no sequence number is missing in between; one that a new timestamp or
    the timeout cuts short is dropped as incomplete."""

    __slots__ = ("_closed", "_open", "_stats", "losses")

    def __init__(self, stats: VideoStats) -> None:
        self._stats = stats
        self.losses = 0  # access units dropped: each wants a key frame
        self._open: _AccessUnit | None = None
        self._closed: int | None = None  # timestamp of the last access unit done with

    def push(self, rtp: _Rtp, now: float) -> list[_Complete]:
        done: list[_Complete] = []
        unit = self._open
        if unit is not None and unit.timestamp != rtp.timestamp:
            # Some senders leave the marker off; the unit is still whole when nothing is
            # missing up to this packet, the first of the next one.
            last = max(unit.packets)
            if (rtp.sequence - unit.first_sequence - last) & 0xFFFF == 1:
                finished = self._finish(unit)
                if finished is not None:
                    done.append(finished)
            else:
                self._abandon("incomplete")
            unit = None
        if unit is None:
            if rtp.timestamp == self._closed:
                _bump(self._stats.packets_dropped, "late")
                return done
            unit = self._open = _AccessUnit(rtp.timestamp, now, rtp.sequence)
        offset = ((rtp.sequence - unit.first_sequence + 0x8000) & 0xFFFF) - 0x8000
        if offset in unit.packets:
            _bump(self._stats.packets_dropped, "duplicate")
            return done
        if len(unit.packets) >= MAX_PACKETS_PER_ACCESS_UNIT:
            self._abandon("oversize")
            return done
        unit.packets[offset] = rtp.payload
        if rtp.marker:
            finished = self._finish(unit)
            if finished is not None:
                done.append(finished)
        return done

    def poll(self, now: float) -> None:
        if self._open is not None and now - self._open.opened > ACCESS_UNIT_TIMEOUT:
            self._abandon("incomplete")

    def _abandon(self, kind: str) -> None:
        assert self._open is not None
        self._closed = self._open.timestamp
        self._open = None
        self.losses += 1
        _bump(self._stats.frames_dropped, kind)

    def _finish(self, unit: _AccessUnit) -> _Complete | None:
        offsets = sorted(unit.packets)
        if offsets[-1] - offsets[0] + 1 != len(offsets):
            self._abandon("loss")
            return None
        self._open = None
        self._closed = unit.timestamp
        reassembler = Reassembler()
        nals: list[bytes] = []
        for offset in offsets:
            pushed = reassembler.push(unit.packets[offset])
            if pushed.error is not None:
                # A unit lost inside the picture: what decodes of it would be wrong.
                _bump(self._stats.nals_dropped, pushed.error)
                self.losses += 1
                _bump(self._stats.frames_dropped, "malformed")
                return None
            nals.extend(pushed.nals)
        if reassembler.pending:
            _bump(self._stats.nals_dropped, "fu_truncated")
            self.losses += 1
            _bump(self._stats.frames_dropped, "malformed")
            return None
        return _Complete(unit.timestamp, nals, (unit.first_sequence + offsets[0]) & 0xFFFF,
                         (unit.first_sequence + offsets[-1]) & 0xFFFF)


class _Writer:
    """RTP packets of one outgoing stream: its SSRC, payload type and sequence numbers."""

    __slots__ = ("mtu", "payload_type", "sequence", "ssrc")

    def __init__(self, ssrc: int | None, payload_type: int | None, sequence: int,
                 mtu: int) -> None:
        self.ssrc = ssrc
        self.payload_type = payload_type
        self.sequence = sequence & 0xFFFF
        self.mtu = mtu

    def write(self, timestamp: int, ssrc: int, payload_type: int,
              payloads: list[bytes]) -> list[bytes]:
        ssrc_octets = (self.ssrc if self.ssrc is not None else ssrc).to_bytes(4, "big")
        pt = self.payload_type if self.payload_type is not None else payload_type
        ts = timestamp.to_bytes(4, "big")
        out = []
        for index, payload in enumerate(payloads):
            marker = 0x80 if index == len(payloads) - 1 else 0
            out.append(bytes([0x80, marker | pt]) + self.sequence.to_bytes(2, "big") + ts
                       + ssrc_octets + payload)
            self.sequence = (self.sequence + 1) & 0xFFFF
        return out


class _Translator:
    """What both directions share: counters, the access unit being assembled, the writer
    of the packets out, and the key-frame flag a lost picture raises."""

    stats: VideoStats
    key_frame_wanted: bool
    # Which packets in made which packets out: what RTCP about the output is mapped with.
    sequences: SequenceMap
    _assembly: _Assembly
    _writer: _Writer
    _source: int | None

    @property
    def source(self) -> int | None:
        """The SSRC whose packets are translated (None before the first)."""
        return self._source

    def poll(self, now: float) -> None:
        """Drop an access unit left open past ACCESS_UNIT_TIMEOUT."""
        self._assembly.poll(now)

    def _parsed(self, packet: bytes) -> _Rtp | None:
        self.stats.packets_in += 1
        rtp = _parse_rtp(packet)
        if isinstance(rtp, str):
            _bump(self.stats.packets_dropped, rtp)
            return None
        return rtp

    def _assembled(self, rtp: _Rtp, now: float) -> list[bytes]:
        """`rtp` into the access unit; the packets of every unit it completes."""
        assembly = self._assembly
        losses = assembly.losses
        assembly.poll(now)
        units = assembly.push(rtp, now)
        if assembly.losses != losses:
            self.key_frame_wanted = True  # the pictures after a lost one refer to it
        out: list[bytes] = []
        for done in units:
            out += self._translate(done, rtp)
        return out

    def _translate(self, done: _Complete, rtp: _Rtp) -> list[bytes]:
        raise NotImplementedError

    def _write(self, done: _Complete, rtp: _Rtp, nals: list[bytes]) -> list[bytes]:
        first = self._writer.sequence
        out = self._writer.write(done.timestamp, rtp.ssrc, rtp.payload_type,
                                 packetize(nals, self._writer.mtu))
        self.sequences.add(first, len(out), done.first_sequence, done.last_sequence)
        self.stats.access_units_out += 1
        self.stats.packets_out += len(out)
        self.stats.octets_out += sum(len(p) for p in out) - MIN_RTP * len(out)
        return out


class FromLync(_Translator):
    """[MS-H264PF] from Lync -> RFC 6184 for the SIP endpoint: one SSRC of Lync's
    `x-ssrc-range` (the first seen in it, or `select`ed), its AVC base layer only (PACSI,
    prefix and SVC units dropped, also from inside STAP-As and FU-As), repacketised for
    `mtu` with the marker on each access unit's last packet."""

    def __init__(self, *, ssrc_range: tuple[int, int] | None = None,
                 ssrc: int | None = None, payload_type: int | None = None,
                 mtu: int = DEFAULT_MTU, first_sequence: int = 0) -> None:
        """`ssrc` and `payload_type` are what the output carries (None: the input's)."""
        self.stats = VideoStats()
        self.key_frame_wanted = True  # until an IDR has gone out
        self._range = ssrc_range
        self._source: int | None = None
        self._assembly = _Assembly(self.stats)
        self._writer = _Writer(ssrc, payload_type, first_sequence, mtu)
        self.sequences = SequenceMap()

    def select(self, ssrc: int) -> None:
        """Follow another of Lync's SSRCs from its next access unit."""
        if ssrc != self._source:
            self._source = ssrc
            self._assembly = _Assembly(self.stats)
            self.key_frame_wanted = True

    def push(self, packet: bytes, now: float) -> list[bytes]:
        rtp = self._parsed(packet)
        if rtp is None:
            return []
        if self._source is None:
            low, high = self._range if self._range is not None else (0, 0xFFFFFFFF)
            if not low <= rtp.ssrc <= high:
                _bump(self.stats.packets_dropped, "ssrc")
                return []
            self._source = rtp.ssrc
        elif rtp.ssrc != self._source:
            _bump(self.stats.packets_dropped, "ssrc")
            return []
        return self._assembled(rtp, now)

    def _translate(self, done: _Complete, rtp: _Rtp) -> list[bytes]:
        kept = []
        for nal in done.nals:
            kind = nal[0] & 0x1F
            if kind in DROPPED_NALS:
                _bump(self.stats.nals_dropped, DROPPED_NALS[kind])
            elif nal[0] & 0x80 or len(nal) < 2:
                _bump(self.stats.nals_dropped, "malformed")
            elif kind not in AVC_TYPES:
                _bump(self.stats.nals_dropped, "unknown")
            else:
                if kind == NAL_SPS:
                    self._note_sps(nal)
                kept.append(nal)
        if not any(nal[0] & 0x1F in VCL_TYPES for nal in kept):
            return []  # an access unit of other layers only: nothing for an AVC decoder
        if any(nal[0] & 0x1F == NAL_IDR for nal in kept):
            self.stats.key_frames += 1
            self.key_frame_wanted = False
        return self._write(done, rtp, kept)

    def _note_sps(self, nal: bytes) -> None:
        try:
            sps = parse_sps(nal)
        except H264Error:
            return  # handed on all the same: the decoder is the judge of its own input
        self.stats.width, self.stats.height = sps.width, sps.height


class ToLync(_Translator):
    """RFC 6184 from the SIP endpoint -> [MS-H264PF] for Lync: each access unit starts with
    a PACSI carrying a full Stream Layout (the picture size of the last SPS, `bitrate`,
    `fps`) and a Bitstream Info SEI, each slice gets its prefix NAL unit, and the whole is
    packetised for `mtu` (PACSI first, never fragmented)."""

    def __init__(self, *, ssrc: int, payload_type: int, bitrate: int, fps: float = 30.0,
                 mtu: int = DEFAULT_MTU, first_sequence: int = 0) -> None:
        if fps not in FPS_INDEX:
            raise ValueError(f"fps must be one of {sorted(FPS_INDEX)}")
        self.stats = VideoStats()
        self.key_frame_wanted = True
        self._bitrate = bitrate
        self._fps_index = FPS_INDEX[fps]
        self._sps: Sps | None = None
        self._ref_frames = 0
        self._donc = 0
        self._source: int | None = None
        self._assembly = _Assembly(self.stats)
        self._writer = _Writer(ssrc, payload_type, first_sequence, mtu)
        self.sequences = SequenceMap()

    def push(self, packet: bytes, now: float) -> list[bytes]:
        rtp = self._parsed(packet)
        if rtp is None:
            return []
        if self._source != rtp.ssrc:
            # A SIP endpoint that restarts its stream (new SSRC) starts a new sequence.
            self._source = rtp.ssrc
            self._assembly = _Assembly(self.stats)
        return self._assembled(rtp, now)

    def _translate(self, done: _Complete, rtp: _Rtp) -> list[bytes]:
        kept = []
        for nal in done.nals:
            kind = nal[0] & 0x1F
            if nal[0] & 0x80 or len(nal) < 2:
                _bump(self.stats.nals_dropped, "malformed")
            elif kind not in AVC_TYPES:
                _bump(self.stats.nals_dropped, DROPPED_NALS.get(kind, "unknown"))
            else:
                if kind == NAL_SPS:
                    self._note_sps(nal)
                kept.append(nal)
        vcl = [nal for nal in kept if nal[0] & 0x1F in VCL_TYPES]
        if not vcl:
            return []
        sps = self._sps
        if sps is None:
            # Nothing can decode it, and the Stream Layout would have no size to state.
            _bump(self.stats.frames_dropped, "no_sps")
            self.key_frame_wanted = True
            return []
        idr = any(nal[0] & 0x1F == NAL_IDR for nal in vcl)
        if any(nal[0] & 0x60 for nal in vcl):
            self._ref_frames = (self._ref_frames + 1) & 0xFF
        units: list[bytes] = []
        for nal in kept:
            if nal[0] & 0x1F in VCL_TYPES:
                units.append(prefix_nal(nal[0], idr))
            units.append(nal)
        layout = StreamLayout(frozenset({0}), (LayerDescription(
            sps.coded_width, sps.coded_height, sps.width, sps.height, self._bitrate,
            self._fps_index, constrained_baseline=_constrained_baseline(sps)),))
        head = build_pacsi(max((nal[0] >> 5) & 3 for nal in kept), idr, self._donc, layout,
                           BitstreamInfo(self._ref_frames, len(units)))
        self._donc = (self._donc + len(units)) & 0xFFFF
        if idr:
            self.stats.key_frames += 1
            self.key_frame_wanted = False
        return self._write(done, rtp, [head, *units])

    def _note_sps(self, nal: bytes) -> None:
        try:
            sps = parse_sps(nal)
        except H264Error:
            _bump(self.stats.nals_dropped, "sps_unreadable")
            return
        self._sps = sps
        self.stats.width, self.stats.height = sps.width, sps.height


def _constrained_baseline(sps: Sps) -> bool:
    """Constrained Baseline: Baseline (66) with constraint_set1_flag, or any profile with
    constraint_set0 and constraint_set1 both set (H.264 A.2.1.1)."""
    return (sps.profile_idc == 66 and bool(sps.constraints & 0x40)) or (
        sps.constraints & 0xC0 == 0xC0)
