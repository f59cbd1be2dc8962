"""What [MS-H264PF] (Lync's X-H264UC) adds to RFC 6184: the PACSI NAL unit (type 30, its
layout from RFC 6190 4.9) that starts each layer of each access unit and carries the Stream
Layout SEI ([MS-H264PF] 2.2.5) and the Bitstream Info SEI, and the SVC prefix NAL unit
(type 14, H.264 G.7.3.1.1 and G.7.3.2.12) before each slice.

Byte layouts: the NAL and SVC header fields are RFC 6190's and H.264 Annex G's. The two SEI
messages are user data unregistered SEI (payloadType 5) told apart by their UUIDs; the
field order and sizes of 2.2.5 were read from [MS-H264PF] itself, and the bit positions
inside the Layer Description octets (FPSIdx/LT, PRID/CB) and the Bitstream Info fields
(ref_frm_cnt, num_of_nal_unit, one octet each) agree in Wireshark's H.264 dissector and two
independent Lync-interoperating implementations."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import NamedTuple

from gateway.media.h264 import NAL_PACSI, NAL_PREFIX, NAL_SEI, H264Error

STREAM_LAYOUT_UUID = bytes.fromhex("139FB1A9446A4DEC8CBF65B1E12D2CFD")
BITSTREAM_INFO_UUID = bytes.fromhex("05FBC6B95A8040E5A22AAB4020267E26")
USER_DATA_UNREGISTERED = 5
LAYER_DESCRIPTION_SIZE = 16

# [MS-H264PF] Layer Description FPSIdx: the frame rates a layer can declare.
FPS_INDEX = {7.5: 0, 12.5: 1, 15.0: 2, 25.0: 3, 30.0: 4, 50.0: 5, 60.0: 6}


@dataclass(frozen=True, slots=True)
class SvcHeader:
    """The three octets after the NAL header of prefix, PACSI and SVC slice units (RFC 6190
    1.1.3). Defaults describe the only layer an AVC stream has: priority 0, no inter-layer
    prediction, dependency/quality/temporal id 0, output, reserved bits 1."""

    idr: bool = False
    priority_id: int = 0
    no_inter_layer_pred: bool = True
    dependency_id: int = 0
    quality_id: int = 0
    temporal_id: int = 0
    use_ref_base_pic: bool = False
    discardable: bool = False
    output: bool = True
    reserved: int = 3
    extension_flag: bool = True  # RFC 6190's R bit, svc_extension_flag in H.264

    def to_bytes(self) -> bytes:
        return bytes([
            (0x80 if self.extension_flag else 0) | (0x40 if self.idr else 0)
            | (self.priority_id & 0x3F),
            (0x80 if self.no_inter_layer_pred else 0) | ((self.dependency_id & 7) << 4)
            | (self.quality_id & 0x0F),
            ((self.temporal_id & 7) << 5) | (0x10 if self.use_ref_base_pic else 0)
            | (0x08 if self.discardable else 0) | (0x04 if self.output else 0)
            | (self.reserved & 3),
        ])

    @classmethod
    def parse(cls, data: bytes) -> SvcHeader:
        if len(data) < 3:
            raise H264Error("svc_header_short")
        a, b, c = data[0], data[1], data[2]
        return cls(bool(a & 0x40), a & 0x3F, bool(b & 0x80), (b >> 4) & 7, b & 0x0F, c >> 5,
                   bool(c & 0x10), bool(c & 0x08), bool(c & 0x04), c & 3, bool(a & 0x80))


# The SVC header of the base layer's units (prefix and PACSI), IDR or not: made once, as
# every access unit toward Lync needs them.
BASE_LAYER = {idr: SvcHeader(idr=idr).to_bytes() for idr in (False, True)}


def _prefix_nal(slice_header: int, idr: bool) -> bytes:
    header = (slice_header & 0xE0) | NAL_PREFIX
    trailing = 0x20 if slice_header & 0x60 else 0x80
    return b"%c%s%c" % (header, BASE_LAYER[idr], trailing)


# By IDR, then by the slice header's F and NRI (its top three bits): all a prefix depends
# on, so that each slice toward Lync finds its prefix rather than formatting it.
_PREFIXES = {idr: tuple(_prefix_nal(top << 5, idr) for top in range(8))
             for idr in (False, True)}


def prefix_nal(slice_header: int, idr: bool) -> bytes:
    """The prefix NAL unit for a base-layer slice whose NAL header octet is
    `slice_header`: its F and NRI, then prefix_nal_unit_svc() (G.7.3.2.12.1) with
    store_ref_base_pic_flag and additional_prefix_nal_unit_extension_flag 0 when the slice
    is a reference (nal_ref_idc != 0), nothing otherwise, then rbsp_trailing_bits."""
    return _PREFIXES[idr][slice_header >> 5 & 7]


@dataclass(frozen=True, slots=True)
class LayerDescription:
    coded_width: int
    coded_height: int
    display_width: int
    display_height: int
    bitrate: int  # bits per second
    fps_index: int  # FPS_INDEX
    layer_type: int = 0  # 0: base layer
    priority_id: int = 0
    constrained_baseline: bool = True

    def to_bytes(self) -> bytes:
        return (self.coded_width.to_bytes(2, "big") + self.coded_height.to_bytes(2, "big")
                + self.display_width.to_bytes(2, "big")
                + self.display_height.to_bytes(2, "big") + self.bitrate.to_bytes(4, "big")
                + bytes([((self.fps_index & 0x1F) << 3) | (self.layer_type & 7),
                         ((self.priority_id & 0x3F) << 2)
                         | (0x02 if self.constrained_baseline else 0), 0, 0]))

    @classmethod
    def parse(cls, data: bytes) -> LayerDescription:
        if len(data) < LAYER_DESCRIPTION_SIZE:
            raise H264Error("layout_short")
        return cls(int.from_bytes(data[0:2], "big"), int.from_bytes(data[2:4], "big"),
                   int.from_bytes(data[4:6], "big"), int.from_bytes(data[6:8], "big"),
                   int.from_bytes(data[8:12], "big"), data[12] >> 3, data[12] & 7,
                   data[13] >> 2, bool(data[13] & 0x02))


@dataclass(frozen=True, slots=True)
class StreamLayout:
    """A full layout (descriptions present, P=1) or an update (presence bits only)."""

    layers_present: frozenset[int]  # PRIDs; LPB0's least significant bit is PRID 0
    descriptions: tuple[LayerDescription, ...] = ()

    def payload(self) -> bytes:
        presence = bytearray(8)
        for prid in self.layers_present:
            presence[prid // 8] |= 1 << (prid % 8)
        body = bytes(presence)
        if not self.descriptions:
            return body + b"\x00"
        return (body + bytes([1, LAYER_DESCRIPTION_SIZE])
                + b"".join(d.to_bytes() for d in self.descriptions))

    @classmethod
    def parse(cls, data: bytes) -> StreamLayout:
        if len(data) < 9:
            raise H264Error("layout_short")
        present = frozenset(i * 8 + bit for i in range(8) for bit in range(8)
                            if data[i] >> bit & 1)
        if not data[8] & 1:
            return cls(present)
        if len(data) < 10:
            raise H264Error("layout_short")
        size = data[9]
        if size < LAYER_DESCRIPTION_SIZE:
            raise H264Error("layout_size")
        # Walk by LDSize, as a receiver must for descriptions longer than it knows.
        rest = data[10:]
        descriptions = tuple(LayerDescription.parse(rest[at:at + size])
                             for at in range(0, len(rest) - size + 1, size))
        return cls(present, descriptions)


class BitstreamInfo(NamedTuple):
    ref_frame_count: int  # modulo 256
    nal_count: int  # NAL units of this layer of this access unit after the PACSI

    @classmethod
    def parse(cls, data: bytes) -> BitstreamInfo:
        if len(data) < 2:
            raise H264Error("bitstream_info_short")
        return cls(data[0], data[1])


def sei_nal(uuid: bytes, payload: bytes) -> bytes:
    """A user data unregistered SEI NAL unit (nal_ref_idc 0) holding one message. Its
    payloadSize counts the UUID and the message (one octet: [MS-H264PF] 2.2.5 writes it as
    one, so messages stay under 255). No emulation prevention: [MS-H264PF] fixes the field
    sizes, and PACSI content never reaches a byte-stream decoder."""
    size = len(uuid) + len(payload)
    if size > 254:
        raise H264Error("sei_size")
    return bytes([NAL_SEI, USER_DATA_UNREGISTERED, size]) + uuid + payload


def parse_sei_nal(nal: bytes) -> tuple[bytes, bytes] | None:
    """The UUID and message of a one-message user data unregistered SEI NAL unit, or None
    for any other SEI."""
    if len(nal) < 19 or nal[0] & 0x1F != NAL_SEI or nal[1] != USER_DATA_UNREGISTERED:
        return None
    size = nal[2]
    if size < 16 or 3 + size > len(nal):
        raise H264Error("sei_size")
    return nal[3:19], nal[19:3 + size]


# PACSI flags octet (RFC 6190 4.9).
FLAG_X, FLAG_Y, FLAG_T = 0x80, 0x40, 0x20


@dataclass(frozen=True, slots=True)
class Pacsi:
    nri: int
    svc: SvcHeader
    flags: int = FLAG_T
    tl0picidx: int = 0  # with FLAG_Y
    idrpicid: int = 0  # with FLAG_Y
    donc: int = 0  # with FLAG_T
    nals: tuple[bytes, ...] = field(default=())  # the SEI NAL units it carries

    def to_bytes(self) -> bytes:
        return _pacsi_octets(self.nri, self.svc.to_bytes(), self.flags, self.tl0picidx,
                             self.idrpicid, self.donc, self.nals)

    @classmethod
    def parse(cls, nal: bytes) -> Pacsi:
        if len(nal) < 5 or nal[0] & 0x1F != NAL_PACSI:
            raise H264Error("pacsi_short")
        svc = SvcHeader.parse(nal[1:4])
        flags = nal[4]
        at = 5
        tl0 = idr = donc = 0
        if flags & FLAG_Y:
            if at + 3 > len(nal):
                raise H264Error("pacsi_short")
            tl0, idr = nal[at], int.from_bytes(nal[at + 1:at + 3], "big")
            at += 3
        if flags & FLAG_T:
            if at + 2 > len(nal):
                raise H264Error("pacsi_short")
            donc = int.from_bytes(nal[at:at + 2], "big")
            at += 2
        nals = []
        while at < len(nal):
            if at + 2 > len(nal):
                raise H264Error("pacsi_truncated")
            size = int.from_bytes(nal[at:at + 2], "big")
            at += 2
            if size == 0 or at + size > len(nal):
                raise H264Error("pacsi_truncated")
            nals.append(nal[at:at + size])
            at += size
        return cls((nal[0] >> 5) & 3, svc, flags, tl0, idr, donc, tuple(nals))

    def stream_layout(self) -> StreamLayout | None:
        for nal in self.nals:
            sei = parse_sei_nal(nal)
            if sei is not None and sei[0] == STREAM_LAYOUT_UUID:
                return StreamLayout.parse(sei[1])
        return None

    def bitstream_info(self) -> BitstreamInfo | None:
        for nal in self.nals:
            sei = parse_sei_nal(nal)
            if sei is not None and sei[0] == BITSTREAM_INFO_UUID:
                return BitstreamInfo.parse(sei[1])
        return None


def _pacsi_octets(nri: int, svc: bytes, flags: int, tl0picidx: int, idrpicid: int, donc: int,
                  nals: tuple[bytes, ...]) -> bytes:
    parts = [bytes(((nri & 3) << 5 | NAL_PACSI,)), svc, bytes((flags,))]
    if flags & FLAG_Y:
        parts += (bytes((tl0picidx & 0xFF,)), (idrpicid & 0xFFFF).to_bytes(2, "big"))
    if flags & FLAG_T:
        parts.append((donc & 0xFFFF).to_bytes(2, "big"))
    for nal in nals:
        parts += (len(nal).to_bytes(2, "big"), nal)
    return b"".join(parts)


def stream_layout_sei(layout: StreamLayout) -> bytes:
    """The SEI NAL unit carrying `layout`: made once per SPS, carried in every PACSI."""
    return sei_nal(STREAM_LAYOUT_UUID, layout.payload())


class PacsiWriter:
    """The PACSI NAL units that start the base-layer access units of one stream (`pacsi`),
    made by one struct call each: all but the NRI, IDR flag, DONC and the Bitstream Info
    fields stays the same for the stream's Stream Layout SEI (`layout`, b"" for none)."""

    __slots__ = ("_middle", "_struct")

    def __init__(self, layout: bytes = b"") -> None:
        nals = (layout,) if layout else ()
        # Everything after the DONC up to the Bitstream Info message's two octets.
        self._middle = b"".join(
            len(nal).to_bytes(2, "big") + nal
             for nal in (*nals, sei_nal(BITSTREAM_INFO_UUID, bytes(2))))[:-2]
        self._struct = struct.Struct(f"!B3sBH{len(self._middle)}sBB")

    def pacsi(self, nri: int, idr: bool, donc: int, ref_frame_count: int,
              nal_count: int) -> bytes:
        """What `pacsi` makes with BitstreamInfo(ref_frame_count, nal_count)."""
        return self._struct.pack((nri & 3) << 5 | NAL_PACSI, BASE_LAYER[idr], FLAG_T,
                                 donc & 0xFFFF, self._middle, ref_frame_count & 0xFF,
                                 min(nal_count, 255))


def pacsi(nri: int, idr: bool, donc: int, info: BitstreamInfo, layout: bytes = b"") -> bytes:
    """The PACSI NAL unit that starts a base-layer access unit: its SVC header is that of
    the layer's NAL units, T set with the DONC of its first NAL unit, and the Stream Layout
    SEI (`stream_layout_sei`, when given) and the Bitstream Info SEI after it."""
    return PacsiWriter(layout).pacsi(nri, idr, donc, *info)
