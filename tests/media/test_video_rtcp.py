"""RTCP pieces of the video relay: compound packets split only when every length, version
and padding holds; NACK items built and read back (bit masks, across the sequence wrap, at
most MAX_NACK_ITEMS); the sequence map's units found by any of their packets out, with input
numbers extended across the wrap; report blocks about other streams left out."""

from __future__ import annotations

from gateway.media.video_rtcp import (
    MAX_NACK_ITEMS,
    RR,
    SR,
    ReportBlock,
    SequenceMap,
    map_block,
    nack,
    nack_sequences,
    packet,
    split,
)


def test_split_takes_a_compound_apart_and_refuses_what_does_not_add_up() -> None:
    sr = packet(0, SR, bytes(24))
    padded = bytes([0xA0, RR, 0, 2]) + bytes(4) + b"\x00\x00\x00\x04"  # 4 octets of padding
    parts = split(sr + padded)
    assert parts is not None and [(p.type, len(p.body)) for p in parts] == [(SR, 24), (RR, 4)]
    assert split(sr[:-4]) is None  # shorter than its length says
    assert split(b"\x40" + sr[1:]) is None  # version 1
    assert split(sr + b"\x80\xc9") is None  # a trailing piece of a header
    assert split(bytes([0xA0, RR, 0, 1]) + b"\x00\x00\x00\x09") is None  # padding > body
    assert split(b"") is None


def test_nack_items_round_trip_across_the_wrap_and_are_capped() -> None:
    wanted = [65534, 65535, 0, 3, 40]
    message = nack(1, 2, wanted)
    assert message is not None
    (part,) = split(message) or []
    assert sorted(nack_sequences(part)) == sorted(wanted)
    assert len(part.body) == 8 + 4 * 3  # 65534 (+65535, 0, 3 in its mask), 40 alone
    many = nack(1, 2, list(range(0, 17 * 40, 17)))
    assert many is not None
    (part,) = split(many) or []
    assert len(nack_sequences(part)) == MAX_NACK_ITEMS
    assert nack(1, 2, []) is None


def test_sequence_map_finds_units_by_any_packet_out_and_extends_inputs() -> None:
    seqs = SequenceMap()
    seqs.add(65535, 2, 65530, 65533)  # out 65535, 0 <- in 65530..65533
    seqs.add(1, 3, 65534, 1)  # out 1..3 <- in 65534..1 (wraps)
    assert seqs.inputs(0) == (65530, 65533)
    assert seqs.inputs(3) == (65534, 65537)
    assert seqs.inputs(4) is None and seqs.inputs(65534) is None


def test_blocks_about_other_streams_or_unmapped_packets_are_left_out() -> None:
    seqs = SequenceMap()
    seqs.add(10, 1, 500, 502)
    ours = ReportBlock(0xAAAA, 3, 1, 10, 4, 5, 6)
    assert map_block(ours, 0xAAAA, 0xBBBB, seqs) == ReportBlock(0xBBBB, 3, 1, 502, 4, 5, 6)
    assert map_block(ours, 0xCCCC, 0xBBBB, seqs) is None
    assert map_block(ours, 0xAAAA, None, seqs) is None
    assert map_block(ReportBlock(0xAAAA, 0, 0, 11, 0, 0, 0), 0xAAAA, 0xBBBB, seqs) is None
