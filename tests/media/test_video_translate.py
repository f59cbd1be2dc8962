"""The video translators between RFC 6184 H.264 and [MS-H264PF]: real x264 packets through
ToLync then FromLync decode (GStreamer's depayloader, ffmpeg's decoder) to frames
bit-identical to the source's, none lost, also from a sender whose packets are larger than
ours; tshark reads the Lync-side PACSI and SEI with the SPS's size and no malformed packet;
Lync-only units dropped (a marked packet of them becomes filler that keeps the marker);
a packet lost on the way leaves its gap in the sequence numbers out (and a picture toward
Lync is dropped whole), with a key frame wanted; bad input counted; any bytes never raise."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.media.h264 import NAL_IDR, STAP_A, split_stap_a, stap_a
from gateway.media.h264uc import Pacsi, prefix_nal
from gateway.media.video_translate import FILLER, FromLync, ToLync
from tests.kit.video import PT, dissect, encode, frames, nal_units

LYNC_PT = 122
SSRC_RANGE = (0x1000, 0x1063)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("video")


@pytest.fixture(scope="module")
def source(tmp: Path) -> list[bytes]:
    # snow: pictures too big for one packet, so FU-A both ways; a key frame every 15
    return encode(tmp, frames=45, pattern="snow", key_interval=15)


def through(packets: list[bytes]) -> tuple[list[bytes], list[bytes], ToLync, FromLync]:
    to = ToLync(ssrc=0x1000, payload_type=LYNC_PT, bitrate=1_000_000)
    back = FromLync(ssrc_range=SSRC_RANGE, ssrc=0xABCD, payload_type=PT)
    lync: list[bytes] = []
    sip: list[bytes] = []
    for index, packet in enumerate(packets):
        out = to.push(packet, index * 0.001)
        lync += out
        for each in out:
            sip += back.push(each, index * 0.001)
    return lync, sip, to, back


def seq(packet: bytes) -> int:
    return (packet[2] << 8) | packet[3]


def test_round_trip_decodes_to_the_same_frames(tmp: Path, source: list[bytes]) -> None:
    lync, sip, to, back = through(source)
    expected = frames(tmp, source, "source")
    assert len(expected) == 45
    assert frames(tmp, sip, "round_trip") == expected
    assert to.stats.access_units_out == back.stats.access_units_out == 45
    assert to.stats.key_frames == back.stats.key_frames == 3
    assert back.stats.nals_dropped["pacsi"] == 45
    assert back.stats.nals_dropped["prefix"] >= 45  # one per slice, x264 may cut several
    assert not to.stats.frames_dropped and not back.stats.frames_dropped
    assert (to.stats.width, to.stats.height) == (back.stats.width, back.stats.height) == (
        640, 360)
    assert any(p[12] & 0x1F == 28 for p in lync)  # FU-A on the Lync side too
    for stream in (lync, sip):
        assert all(len(p) - 12 <= 1200 for p in stream)
        assert [seq(p) for p in stream] == [(seq(stream[0]) + i) & 0xFFFF
                                             for i in range(len(stream))]
    assert {p[8:12] for p in sip} == {(0xABCD).to_bytes(4, "big")}
    assert {p[1] & 0x7F for p in lync} == {LYNC_PT}
    # The marker closes each access unit, and only there: one per source timestamp.
    marked = [p for p in lync if p[1] & 0x80]
    assert [p[4:8] for p in marked] == list(dict.fromkeys(p[4:8] for p in source))


def test_tshark_reads_the_lync_packets(tmp: Path, source: list[bytes]) -> None:
    lync, _, _, _ = through(source)
    rows, expert = dissect(
        tmp, lync, "lync", ["h264.sei.ms.layout.desc.display_width",
                            "h264.sei.ms.layout.desc.display_height",
                            "h264.sei.ms.layout.desc.coded_height",
                            "h264.sei.ms.layout.desc.constrained_baseline",
                            "h264.sei.ms.bitstrea3416m_info.num_nalus", "h264.nal_unit_hdr"],
        payload_type=LYNC_PT)
    assert "Malformed" not in expert and "Bad NAL" not in expert
    assert "Wrong length" not in expert and "Error" not in expert
    first_of_each = [row for row in rows if row[0]]
    assert len(first_of_each) == 45  # one Stream Layout per access unit
    assert {tuple(row[:4]) for row in first_of_each} == {("640", "360", "368", "1")}
    # The PACSI comes first, in a STAP-A or alone, then each slice after a prefix unit.
    types = [row[5].split(",") for row in rows]
    assert all(t[0] in ("24", "30") for t, row in zip(types, rows, strict=True) if row[0])
    assert all(t.index("30") == 1 for t in types if t[0] == "24" and "30" in t)


def test_lync_only_units_are_dropped_also_inside_aggregates() -> None:
    idr = bytes([0x65]) + bytes(range(1, 200))
    sps = bytes.fromhex("6742c01e8c8d40501e900f0884")
    pps = bytes.fromhex("68ce3c80")
    svc_slice = bytes([0x74, 0x80, 0x80, 0x07]) + b"\x11" * 50
    subset_sps = bytes([0x6F, 0x53, 0x00, 0x1E])
    payloads = [stap_a([bytes([0x7E, 0xC0, 0x80, 0x07, 0x20, 0, 0]), sps, pps,
                        prefix_nal(0x65, True)]),
                idr, bytes([0x7C, 0x80 | 20]) + svc_slice[1:30],  # an SVC slice in FU-As
                bytes([0x7C, 0x40 | 20]) + svc_slice[30:], subset_sps]
    back = FromLync(ssrc_range=SSRC_RANGE, first_sequence=500)
    out = []
    for index, payload in enumerate(payloads):
        marker = 0x80 if index == len(payloads) - 1 else 0
        out += back.push(rtp(index + 7, 9000, payload, marker=marker), 0.0)
    assert back.stats.nals_dropped == {"pacsi": 1, "prefix": 1, "svc_slice": 1,
                                       "subset_sps": 1}
    # The STAP-A rebuilt, the IDR as it came, the SVC slice's packets dropped, and the
    # marked packet of a subset SPS alone a filler unit that closes the access unit.
    assert [p[12:] for p in out] == [stap_a([sps, pps]), idr, FILLER]
    assert [seq(p) for p in out] == [500, 501, 502] and [p[1] >> 7 for p in out] == [0, 0, 1]
    assert back.stats.packets_dropped == {"lync_only": 2}
    assert back.stats.key_frames == 1 and not back.key_frame_wanted
    assert back.stats.access_units_out == 1


def rtp(sequence: int, timestamp: int, payload: bytes, *, ssrc: int = 0x1001,
        marker: int = 0x80, pt: int = LYNC_PT) -> bytes:
    return (bytes([0x80, marker | pt]) + sequence.to_bytes(2, "big")
            + timestamp.to_bytes(4, "big") + ssrc.to_bytes(4, "big") + payload)


def test_one_ssrc_of_the_range_is_kept() -> None:
    back = FromLync(ssrc_range=SSRC_RANGE)
    idr = bytes([0x65, 0x88, 0x84])
    assert back.push(rtp(1, 0, idr, ssrc=0x0FFF), 0.0) == []  # outside the range
    assert len(back.push(rtp(1, 0, idr, ssrc=0x1002), 0.0)) == 1
    assert back.push(rtp(2, 3000, idr, ssrc=0x1003), 0.0) == []  # another of the range
    assert back.source == 0x1002
    assert back.stats.packets_dropped == {"ssrc": 2}


def test_sequence_numbers_have_no_gap_where_units_were_dropped() -> None:
    back = FromLync(ssrc_range=SSRC_RANGE, first_sequence=65534)
    pacsi_only = bytes([0x7E, 0xC0, 0x80, 0x07, 0x20, 0, 0])
    slice_ = bytes([0x41, 0x9A, 0x02])
    out = []
    for index in range(4):
        out += back.push(rtp(100 + 2 * index, 3000 * index, pacsi_only, marker=0), 0.0)
        out += back.push(rtp(101 + 2 * index, 3000 * index, slice_), 0.0)
    assert [seq(p) for p in out] == [65534, 65535, 0, 1]
    assert [int.from_bytes(p[4:8], "big") for p in out] == [0, 3000, 6000, 9000]
    assert all(p[1] & 0x80 for p in out)


def test_bad_input_is_counted_and_the_stream_goes_on() -> None:
    back = FromLync(ssrc_range=SSRC_RANGE, first_sequence=100)
    good = bytes([0x41, 0x9A, 0x02])
    out = []
    out += back.push(rtp(1, 0, bytes([0x7C, 0x85]) + b"\x01" * 10, marker=0), 0.0)  # IDR
    out += back.push(rtp(2, 0, good), 0.0)  # cuts the FU-A short: the receiver drops it
    out += back.push(rtp(3, 3000, bytes([0x5F, 1, 2]), marker=0), 0.0)  # unknown type 31
    out += back.push(rtp(4, 3000, good), 0.0)
    out += back.push(rtp(5, 6000, bytes([0x7C, 0x05]) + b"\x02" * 5, marker=0), 0.0)  # no start
    assert not back.key_frame_wanted and not back.stats.packets_lost
    out += back.push(rtp(7, 9000, good), 0.0)  # 6 lost on the way
    assert back.key_frame_wanted and back.stats.packets_lost == 1
    out += back.push(rtp(8, 12000, b"\x41"), 0.0)  # a NAL header without payload
    out += back.push(b"\x80\x7a\x00", 0.0)
    out += back.push(rtp(9, 15000, good), 0.0)
    out += back.push(rtp(4, 3000, good), 0.0)  # late: its gap, if any, went out already
    assert back.stats.nals_dropped == {"fu_truncated": 2, "unknown": 1, "malformed": 1}
    assert back.stats.packets_dropped == {"lync_only": 3, "short": 1, "late": 1}
    # Dropped packets close their gaps; the lost one keeps its own.
    assert [seq(p) for p in out] == [100, 101, 102, 104, 105]
    assert [int.from_bytes(p[4:8], "big") for p in out] == [0, 0, 3000, 9000, 15000]


def test_a_picture_toward_lync_with_a_packet_lost_is_dropped_whole(
        source: list[bytes]) -> None:
    """The loss policy toward Lync: the damaged access unit goes nowhere, the sequence
    numbers out jump by its packets (Lync's receiver sees the loss there), a key frame is
    wanted, and the next access unit goes out whole."""
    units: dict[bytes, list[int]] = {}
    for index, packet in enumerate(source):
        units.setdefault(packet[4:8], []).append(index)
    damaged = next(indexes for indexes in list(units.values())[5:] if len(indexes) > 2)
    lost = damaged[1]
    to = ToLync(ssrc=0x1000, payload_type=LYNC_PT, bitrate=1_000_000)
    before: list[bytes] = []
    after: list[bytes] = []
    for index, packet in enumerate(source):
        if index != lost:
            (before if index < damaged[0] else after).extend(to.push(packet, 0.0))
        if index == damaged[-1]:
            assert to.key_frame_wanted  # at once, so a PLI goes before the next picture
            assert to.stats.frames_dropped == {"loss": 1}
    assert after[0][4:8] != source[damaged[0]][4:8]
    assert seq(after[0]) == (seq(before[-1]) + 1 + len(damaged)) & 0xFFFF
    assert to.stats.access_units_out == 44 and to.stats.packets_lost == 1


def test_a_sender_with_larger_packets_is_cut_to_our_mtu(tmp: Path) -> None:
    source = encode(tmp, frames=10, pattern="snow", key_interval=10, mtu=1400)
    lync, sip, _, _ = through(source)
    assert all(len(p) - 12 <= 1200 for p in lync + sip)
    assert frames(tmp, sip, "cut_again") == frames(tmp, source, "larger")


def test_to_lync_waits_for_an_sps_and_wraps_each_slice() -> None:
    to = ToLync(ssrc=0x1000, payload_type=LYNC_PT, bitrate=256_000, fps=15.0)
    slice_ = bytes([0x41, 0x9A, 0x02])
    assert to.push(rtp(1, 0, slice_, pt=PT), 0.0) == []
    assert to.stats.frames_dropped == {"no_sps": 1} and to.key_frame_wanted
    sps = bytes.fromhex("6742c01e8c8d40501e900f0884")  # 640x480 constrained baseline
    pps = bytes.fromhex("68ce3c80")
    idr = bytes([0x65, 0x88, 0x84, 0x21])
    out = to.push(rtp(2, 3000, stap_a([sps, pps, idr]), pt=PT), 0.0)
    assert len(out) == 1 and out[0][12] & 0x1F == STAP_A
    from gateway.media.h264 import split_stap_a
    from gateway.media.h264uc import Pacsi
    units = split_stap_a(out[0][12:])
    assert [u[0] & 0x1F for u in units] == [30, 7, 8, 14, NAL_IDR]
    head = Pacsi.parse(units[0])
    layout = head.stream_layout()
    info = head.bitstream_info()
    assert layout is not None and info is not None and head.svc.idr
    desc = layout.descriptions[0]
    assert (desc.display_width, desc.display_height, desc.bitrate, desc.fps_index) == (
        640, 480, 256_000, 2)
    assert info.nal_count == 4
    assert units[3] == prefix_nal(0x65, True) and not to.key_frame_wanted



def test_a_new_sps_is_read_each_time_it_changes(source: list[bytes]) -> None:
    """An SPS is read once while the sender repeats it, and again whenever another comes:
    the picture size in the counters and in the PACSI toward Lync follows each change,
    also back to a size seen before."""
    sps_480 = bytes.fromhex("6742c01e8c8d40501e900f0884")
    sps_360 = next(nal for _, nal in nal_units(source) if nal[0] & 0x1F == 7)
    pps = bytes.fromhex("68ce3c80")
    idr = bytes([0x65, 0x88, 0x84, 0x21])
    to = ToLync(ssrc=0x1000, payload_type=LYNC_PT, bitrate=256_000)
    back = FromLync(ssrc_range=SSRC_RANGE)
    sizes = []
    for index, sps in enumerate([sps_480, sps_480, sps_360, sps_360, sps_480]):
        out = to.push(rtp(index, 3000 * index, stap_a([sps, pps, idr]), pt=PT), 0.0)
        back.push(rtp(index, 3000 * index, stap_a([sps, pps, idr])), 0.0)
        layout = Pacsi.parse(split_stap_a(out[0][12:])[0]).stream_layout()
        assert layout is not None
        sizes.append((to.stats.width, to.stats.height, back.stats.width, back.stats.height,
                      layout.descriptions[0].display_height))
    assert sizes == [(640, 480, 640, 480, 480)] * 2 + [(640, 360, 640, 360, 360)] * 2 + [
        (640, 480, 640, 480, 480)]

@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=80), max_size=30), st.booleans())
def test_any_bytes_never_raise(packets: list[bytes], to_lync: bool) -> None:
    translator: ToLync | FromLync = (ToLync(ssrc=1, payload_type=LYNC_PT, bitrate=1)
                                     if to_lync else FromLync())
    for index, packet in enumerate(packets):
        for out in translator.push(packet, index * 0.1):
            assert out[0] == 0x80 and len(out) > 12
    if isinstance(translator, ToLync):
        translator.poll(100.0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 3), st.binary(max_size=60),
                          st.booleans()), max_size=25))
def test_any_rtp_payloads_never_raise(packets: list[tuple[int, int, bytes, bool]]) -> None:
    to = ToLync(ssrc=1, payload_type=LYNC_PT, bitrate=1)
    back = FromLync()
    for sequence, frame, payload, marker in packets:
        packet = rtp(sequence, frame * 3000, payload, marker=0x80 if marker else 0)
        for out in to.push(packet, 0.0):
            back.push(out, 0.0)
        back.push(packet, 0.0)


SPS_640X480 = bytes.fromhex("6742c01e8c8d40501e900f0884")
_TYPES = st.sampled_from([1, 1, 5, 5, 6, 7, 14, 15, 20, 30, 31])  # slices the likeliest
_NAL = st.one_of(st.just(SPS_640X480), st.builds(
    lambda kind, nri, body: bytes([nri << 5 | kind]) + body, _TYPES, st.integers(0, 3),
    st.binary(min_size=1, max_size=12)))
_FU_A = st.builds(lambda f, kind, bits, body: bytes([f | 0x60 | 28, bits | kind]) + body,
                  st.sampled_from([0, 0, 0, 0x80]), _TYPES,
                  st.sampled_from([0x80, 0, 0, 0x40, 0xC0, 0xA0]),
                  st.binary(min_size=1, max_size=12))


def _pieces(kind: int, bodies: list[bytes]) -> list[bytes]:
    """A NAL unit of `kind` in FU-As: S on the first piece, E on the last."""
    return [bytes([0x60 | 28, (0x80 if n == 0 else 0) | (0x40 if n == len(bodies) - 1 else 0)
                   | kind]) + body for n, body in enumerate(bodies)]


# Each what one NAL unit (or aggregate) of a sender gives: its packets' payloads.
_UNIT = st.one_of(_NAL.map(lambda nal: [nal]), _FU_A.map(lambda fu: [fu]),
                  st.lists(_NAL, min_size=1, max_size=3).map(lambda nals: [stap_a(nals)]),
                  st.builds(_pieces, _TYPES, st.lists(st.binary(min_size=1, max_size=12),
                                                      min_size=1, max_size=3)))


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.tuples(_UNIT, st.sampled_from([1, 1, 1, 1, 0, 2]), st.booleans(),
                          st.booleans()), max_size=30), st.booleans())
def test_the_short_ways_give_what_the_full_way_gives(
        units: list[tuple[list[bytes], int, bool, bool]], to_lync: bool) -> None:
    """The translators' short ways for the commonest packets (an FU-A piece or start, a
    STAP-A of Lync's own units, each next in sequence with a plain header) give the
    packets out, counters and key-frame wishes that the full way, which every packet with
    a header extension takes, gives for the same packets."""
    plain = []
    sequence = frame = 0
    for payloads, step, new_frame, marker in units:
        sequence, frame = sequence + step - 1, frame + new_frame
        for n, payload in enumerate(payloads):
            sequence += 1
            plain.append(rtp(sequence, 3000 * frame, payload,
                             marker=0x80 if marker and n == len(payloads) - 1 else 0))
    # The same packets with an empty header extension (RFC 3550 5.3.1).
    extended = [bytes([0x90]) + p[1:12] + b"\xbe\xde\x00\x00" + p[12:] for p in plain]
    runs = []
    for packets in (plain, extended):
        translator: ToLync | FromLync = (
            ToLync(ssrc=0x1000, payload_type=LYNC_PT, bitrate=1_000_000) if to_lync
            else FromLync(ssrc_range=SSRC_RANGE, ssrc=0xABCD, payload_type=PT))
        runs.append(([(translator.push(p, index * 0.1), translator.key_frame_wanted)
                      for index, p in enumerate(packets)], translator.stats.as_dict()))
    assert runs[0] == runs[1]
