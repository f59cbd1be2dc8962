"""RTCP pieces of the video relay: compound packets split only when every length, version
and padding holds; NACK items built and read back (bit masks, across the sequence wrap, at
most MAX_NACK_ITEMS); the sequence map's shifts found for any packet out, with input
numbers extended across the wrap; report blocks about other streams left out; a TMMBR's
bit rate as mantissa and exponent, never above what was asked, and read back; Lync's
bandwidth extensions found after the report blocks, others skipped by their length."""

from __future__ import annotations

from gateway.media.video_rtcp import (
    EXT_POLICY_SERVER_BANDWIDTH,
    EXT_RECEIVER_BANDWIDTH_LIMIT,
    MAX_NACK_ITEMS,
    RR,
    SR,
    ReportBlock,
    SequenceMap,
    map_block,
    nack,
    nack_sequences,
    packet,
    report_extensions,
    split,
    tmmbr,
    tmmbr_requests,
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


def test_sequence_map_follows_the_shifts_and_extends_inputs() -> None:
    seqs = SequenceMap()
    assert seqs.inputs(7) is None
    seqs.shift(65535, 65530)  # out 65535, 0, 1 <- in 65530, 65531, 65532
    seqs.shift(3, 65533)  # a packet out added at 2; out 3, 4 ... <- in 65533, 65534 ...
    assert [seqs.inputs(out) for out in (65535, 0, 1, 2)] == [65530, 65531, 65532, 65533]
    assert [seqs.inputs(out) for out in (3, 6)] == [65533, 65536]  # 65536: the wrap counted


def test_blocks_about_other_streams_or_unmapped_packets_are_left_out() -> None:
    seqs = SequenceMap()
    seqs.shift(10, 500)
    ours = ReportBlock(0xAAAA, 3, 1, 12, 4, 5, 6)
    assert map_block(ours, 0xAAAA, 0xBBBB, seqs.inputs) == ReportBlock(0xBBBB, 3, 1, 502, 4,
                                                                        5, 6)
    assert map_block(ours, 0xCCCC, 0xBBBB, seqs.inputs) is None
    assert map_block(ours, 0xAAAA, None, seqs.inputs) is None
    assert map_block(ours, 0xAAAA, 0xBBBB, lambda seq: None) is None


def test_tmmbr_rate_never_above_what_was_asked_and_read_back() -> None:
    for rate in (64_000, 1_500_000, 131_071, 131_073, 2_000_001):
        (part,) = split(tmmbr(1, 0x5151, rate, 40)) or []
        assert part.body[4:8] == bytes(4)  # media source: 0, the FCI names the stream
        ((ssrc, got),) = tmmbr_requests(part)
        assert ssrc == 0x5151 and rate - got < rate / 65536 and got <= rate
        assert int.from_bytes(part.body[12:16], "big") & 0x1FF == 40


def test_lync_bandwidth_extensions_are_found_after_the_blocks() -> None:
    block = ReportBlock(1, 0, 0, 0, 0, 0, 0).to_bytes()
    unknown = (0x0B).to_bytes(2, "big") + (8).to_bytes(2, "big") + bytes(4)
    policy = (EXT_POLICY_SERVER_BANDWIDTH.to_bytes(2, "big") + (12).to_bytes(2, "big")
              + bytes(4) + (700_000).to_bytes(4, "big"))
    limit = (EXT_RECEIVER_BANDWIDTH_LIMIT.to_bytes(2, "big") + (12).to_bytes(2, "big")
             + bytes(4) + (512_000).to_bytes(4, "big"))
    (part,) = split(packet(1, RR, bytes(4) + block + unknown + policy + limit)) or []
    assert report_extensions(part) == {EXT_POLICY_SERVER_BANDWIDTH: 700_000,
                                       EXT_RECEIVER_BANDWIDTH_LIMIT: 512_000}
    (cut,) = split(packet(1, RR, bytes(4) + block + limit[:6] + bytes(2))) or []
    assert report_extensions(cut) == {}
