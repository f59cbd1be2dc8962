"""RFC 6184 H.264 over RTP, non-interleaved mode (packetization-mode=1): NAL unit headers,
single NAL unit packets, STAP-A and FU-A made and taken apart, and the picture size an SPS declares
(H.264 7.3.2.1.1, 7.4.2.1.1). Pure functions on bytes; malformed input raises H264Error,
which callers count and drop."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# nal_unit_type values (H.264 Table 7-1, RFC 6184 Table 1, RFC 6190 for 30).
NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9
NAL_PREFIX = 14
NAL_SUBSET_SPS = 15
NAL_SLICE_EXT = 20
STAP_A = 24
STAP_B = 25
MTAP16 = 26
MTAP24 = 27
FU_A = 28
FU_B = 29
NAL_PACSI = 30

# What a plain AVC decoder takes (Table 7-1 types 1-13 and 19); 14-15 and 20 are SVC's,
# 16-18 and 21-23 reserved or other extensions, 0 and 24-31 never reach a decoder.
AVC_TYPES = frozenset({*range(1, 14), 19})
VCL_TYPES = frozenset({1, 2, 3, 4, 5})

# Profiles whose SPS carries chroma_format_idc and the fields after it (7.3.2.1.1).
HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})

_SIZE = struct.Struct("!H")  # a NAL unit's size in a STAP-A
_OCTET = [bytes((n,)) for n in range(256)]


class H264Error(ValueError):
    """A payload or NAL unit no decoder could use; `kind` names the counter it goes to."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        super().__init__(kind)


@dataclass(frozen=True, slots=True)
class NalHeader:
    forbidden: bool
    nri: int
    type: int

    @classmethod
    def parse(cls, octet: int) -> NalHeader:
        return cls(bool(octet & 0x80), (octet >> 5) & 3, octet & 0x1F)

    def octet(self) -> int:
        return (0x80 if self.forbidden else 0) | (self.nri << 5) | self.type


def nal_type(nal: bytes) -> int:
    return nal[0] & 0x1F


def split_stap_a(payload: bytes) -> list[bytes]:
    """The NAL units of a STAP-A payload (RFC 6184 5.7.1); a size running past the end, a
    zero size or trailing octets make the whole packet unusable."""
    if len(payload) < 4 or payload[0] & 0x1F != STAP_A:
        raise H264Error("stap_short")
    nals = []
    at = 1
    while at < len(payload):
        if at + 2 > len(payload):
            raise H264Error("stap_truncated")
        size = (payload[at] << 8) | payload[at + 1]
        at += 2
        if size == 0 or at + size > len(payload):
            raise H264Error("stap_truncated")
        nals.append(payload[at:at + size])
        at += size
    return nals


def stap_a(nals: Sequence[bytes]) -> bytes:
    """One STAP-A of `nals`: F is the OR and NRI the highest of theirs (RFC 6184 5.7)."""
    parts = [b""]  # the STAP-A header, once the units are seen
    heads = nri = 0
    for nal in nals:
        heads |= nal[0]
        if nal[0] & 0x60 > nri:
            nri = nal[0] & 0x60
        parts.append(_SIZE.pack(len(nal)))
        parts.append(nal)
    parts[0] = _OCTET[(heads & 0x80) | nri | STAP_A]
    return b"".join(parts)


def fragment(nal: bytes, mtu: int) -> list[bytes]:
    """FU-A payloads of at most `mtu` octets carrying `nal`, in near-equal pieces so that
    the last is not a sliver."""
    body = nal[1:]
    room = mtu - 2
    if room < 1 or not body:
        raise H264Error("mtu")
    count = -(-len(body) // room)
    piece = -(-len(body) // count)
    indicator = (nal[0] & 0xE0) | FU_A
    out = []
    for index, at in enumerate(range(0, len(body), piece)):
        fu = nal[0] & 0x1F
        if index == 0:
            fu |= 0x80
        if at + piece >= len(body):
            fu |= 0x40
        out.append(bytes([indicator, fu]) + body[at:at + piece])
    return out


def split_fu_a(payload: bytes, mtu: int) -> list[bytes]:
    """An FU-A payload as it is when it fits `mtu`, else cut into FU-As that do (the start
    bit on the first piece only, the end bit on the last only), for a sender whose packets
    are larger than ours may be."""
    if len(payload) <= mtu:
        return [payload]
    indicator, fu = payload[0], payload[1]
    body = payload[2:]
    room = mtu - 2
    if room < 1:
        raise H264Error("mtu")
    pieces = [body[at:at + room] for at in range(0, len(body), room)]
    last = len(pieces) - 1
    return [bytes([indicator, fu & (0x1F | (0x80 if index == 0 else 0)
                                    | (0x40 if index == last else 0))]) + piece
            for index, piece in enumerate(pieces)]


def packetize(nals: Iterable[bytes], mtu: int) -> list[bytes]:
    """RTP payloads for one access unit's NAL units in order: consecutive units that fit
    together go in one STAP-A, a unit alone in its packet as a single NAL unit packet, one
    larger than `mtu` as FU-As."""
    out: list[bytes] = []
    group: list[bytes] = []
    size = 1  # of the STAP-A the group would make
    for nal in nals:
        if group and (len(nal) > mtu or size + 2 + len(nal) > mtu):
            out.append(group[0] if len(group) == 1 else stap_a(group))
            group, size = [], 1
        if len(nal) > mtu:
            out += fragment(nal, mtu)
        else:
            group.append(nal)
            size += 2 + len(nal)
    if group:
        out.append(group[0] if len(group) == 1 else stap_a(group))
    return out


# --- SPS ---------------------------------------------------------------------------------


def unescape(data: bytes) -> bytes:
    """RBSP from NAL unit payload: drop each emulation_prevention_three_byte (7.4.1)."""
    if b"\x00\x00\x03" not in data:
        return data
    out = bytearray()
    zeros = 0
    for octet in data:
        if zeros >= 2 and octet == 3:
            zeros = 0
            continue
        out.append(octet)
        zeros = zeros + 1 if octet == 0 else 0
    return bytes(out)


class BitReader:
    """u(n), ue(v) and se(v) of H.264 9.1 over an RBSP; reading past the end raises."""

    __slots__ = ("_bits", "_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0
        self._bits = len(data) * 8

    def u(self, count: int) -> int:
        if self._pos + count > self._bits:
            raise H264Error("sps_truncated")
        value = 0
        for _ in range(count):
            octet = self._data[self._pos >> 3]
            value = (value << 1) | ((octet >> (7 - (self._pos & 7))) & 1)
            self._pos += 1
        return value

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:  # 9.1: codeNum fits 32 bits; more is a corrupt stream
                raise H264Error("sps_golomb")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        code = self.ue()
        return (code + 1) // 2 if code & 1 else -(code // 2)


@dataclass(frozen=True, slots=True)
class Sps:
    profile_idc: int
    constraints: int
    level_idc: int
    sps_id: int
    chroma_format_idc: int
    max_num_ref_frames: int
    frame_mbs_only: bool
    coded_width: int  # whole macroblocks, before cropping
    coded_height: int
    width: int  # what is displayed: after the frame cropping rectangle
    height: int


def _skip_scaling_list(bits: BitReader, size: int) -> None:
    last = following = 8
    for _ in range(size):
        if following:
            following = (last + bits.se() + 256) % 256
        last = following or last


def parse_sps(nal: bytes) -> Sps:
    """The fields of a sequence parameter set NAL unit that describe the picture."""
    if len(nal) < 4 or nal[0] & 0x1F != NAL_SPS:
        raise H264Error("sps_short")
    bits = BitReader(unescape(nal[1:]))
    profile, constraints, level = bits.u(8), bits.u(8), bits.u(8)
    sps_id = bits.ue()
    if sps_id > 31:
        raise H264Error("sps_range")
    chroma_format_idc = 1  # 7.4.2.1.1: inferred 4:2:0 when absent
    separate_planes = False
    if profile in HIGH_PROFILES:
        chroma_format_idc = bits.ue()
        if chroma_format_idc > 3:
            raise H264Error("sps_range")
        if chroma_format_idc == 3:
            separate_planes = bool(bits.u(1))
        bits.ue()  # bit_depth_luma_minus8
        bits.ue()  # bit_depth_chroma_minus8
        bits.u(1)  # qpprime_y_zero_transform_bypass_flag
        if bits.u(1):  # seq_scaling_matrix_present_flag
            for index in range(8 if chroma_format_idc != 3 else 12):
                if bits.u(1):
                    _skip_scaling_list(bits, 16 if index < 6 else 64)
    bits.ue()  # log2_max_frame_num_minus4
    poc_type = bits.ue()
    if poc_type == 0:
        bits.ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif poc_type == 1:
        bits.u(1)
        bits.se()
        bits.se()
        cycle = bits.ue()
        if cycle > 255:
            raise H264Error("sps_range")
        for _ in range(cycle):
            bits.se()
    elif poc_type != 2:
        raise H264Error("sps_range")
    max_refs = bits.ue()
    bits.u(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = bits.ue() + 1
    height_map_units = bits.ue() + 1
    frame_mbs_only = bool(bits.u(1))
    if not frame_mbs_only:
        bits.u(1)  # mb_adaptive_frame_field_flag
    bits.u(1)  # direct_8x8_inference_flag
    coded_width = width_mbs * 16
    coded_height = (2 - frame_mbs_only) * height_map_units * 16
    width, height = coded_width, coded_height
    if bits.u(1):  # frame_cropping_flag
        left, right, top, bottom = bits.ue(), bits.ue(), bits.ue(), bits.ue()
        # 7.4.2.1.1, (7-19)..(7-22): crop units follow the chroma subsampling, and count
        # field lines twice when the picture may be coded as fields.
        chroma_array_type = 0 if separate_planes else chroma_format_idc
        if chroma_array_type == 0:
            unit_x, unit_y = 1, 2 - frame_mbs_only
        else:
            sub_width = 1 if chroma_format_idc == 3 else 2
            sub_height = 2 if chroma_format_idc == 1 else 1
            unit_x, unit_y = sub_width, sub_height * (2 - frame_mbs_only)
        width -= (left + right) * unit_x
        height -= (top + bottom) * unit_y
    if width <= 0 or height <= 0 or coded_width > 0xFFFF or coded_height > 0xFFFF:
        raise H264Error("sps_range")
    return Sps(profile, constraints, level, sps_id, chroma_format_idc, max_refs,
               frame_mbs_only, coded_width, coded_height, width, height)
