"""The relay core without sockets: SRTP <-> RTP with libsrtp on the far side (MKI as Lync
writes it), payload-type remapping with SSRC and sequence kept, rtcp-mux classification,
loss counting, bad and forged packets dropped and counted (any bytes at all, both ways),
and the media timeout."""

from __future__ import annotations

import pylibsrtp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.media.call import CallMedia
from gateway.media.relay import MAX_SSRCS, Side, StreamRelay
from gateway.media.srtp import SrtpContext
from tests.kit.media import Wire, crypto, far_end, rtcp_sr, rtp


def relay_pair(mki: bool) -> tuple[StreamRelay, Wire, Wire, pylibsrtp.Session,
                                   pylibsrtp.Session]:
    """Lync side speaks SRTP (its keys: `theirs`, ours: `mine`), SIP side plain RTP. Lync
    numbers PCMU... as 0 and G.722 as 9; the SIP side numbers G.722 as 109 (remapped)."""
    theirs, their_key = crypto(mki)
    mine, my_key = crypto(mki)
    lync_wire, sip_wire = Wire(), Wire()
    lync = Side("lync", lync_wire, srtp_in=SrtpContext(theirs, inbound=True),
                srtp_out=SrtpContext(mine, inbound=False), pt_map={109: 9})
    sip = Side("sip", sip_wire, pt_map={9: 109})
    now = [0.0]
    relay = StreamRelay("audio", lync, sip, clock=lambda: now[0])
    return relay, lync_wire, sip_wire, far_end(their_key, True), far_end(my_key, False)


def with_mki(packet: bytes, tag: int = 10) -> bytes:
    return packet[:-tag] + b"\x01" + packet[-tag:]


def without_mki(packet: bytes, tag: int = 10) -> bytes:
    assert packet[-tag - 1] == 1
    return packet[: -tag - 1] + packet[-tag:]


@pytest.mark.parametrize("mki", [False, True])
def test_srtp_from_lync_arrives_as_rtp_with_remapped_pt_and_back(mki: bool) -> None:
    relay, lync_wire, sip_wire, lync_tx, lync_rx = relay_pair(mki)
    for seq in (1, 2):
        protected = lync_tx.protect(rtp(seq, pt=9))
        relay.from_a(with_mki(protected) if mki else protected, rtcp=False)
    assert [p for p, _ in sip_wire.sent] == [rtp(1, pt=109), rtp(2, pt=109)]  # SSRC/seq kept
    relay.from_b(rtp(7, pt=109, ssrc=0x55667788), rtcp=False)
    packet, is_rtcp = lync_wire.sent[0]
    assert not is_rtcp
    clear = lync_rx.unprotect(without_mki(packet) if mki else packet)
    assert clear == rtp(7, pt=9, ssrc=0x55667788)
    relay.from_b(rtcp_sr(), rtcp=True)  # SRTCP toward Lync
    packet, is_rtcp = lync_wire.sent[1]
    assert is_rtcp and lync_rx.unprotect_rtcp(without_mki(packet) if mki else packet) == (
        rtcp_sr())


def test_forged_short_and_non_rtp_packets_are_counted_and_dropped() -> None:
    relay, _, sip_wire, lync_tx, _ = relay_pair(False)
    good = lync_tx.protect(rtp(1))
    forged = good[:-1] + bytes([good[-1] ^ 1])
    relay.from_a(forged, rtcp=False)
    relay.from_a(b"\x80\x00", rtcp=False)
    relay.from_b(b"\x80", rtcp=False)
    relay.from_b(b"\x40" + rtp(1)[1:], rtcp=False)  # version 1
    assert sip_wire.sent == []
    assert relay.stats[("lync", "sip")].dropped == {"auth": 2}  # forged and too short
    assert relay.stats[("sip", "lync")].dropped == {"short": 1, "version": 1}


def test_rtp_shorter_than_its_csrc_list_or_extension_is_dropped_before_srtp() -> None:
    """A header that claims more than the packet holds (CSRC count, header extension length,
    RFC 3550 5.1/5.3.1) is counted 'short' and dropped: libsrtp, which would refuse it with
    an exception out of the socket callback, never sees it."""
    relay, lync_wire, _, _, _ = relay_pair(False)
    csrcs = bytes.fromhex("a20f0b0d04c36ed80e71e0fd77")  # CC=2, 13 bytes
    extension = b"\x90" + rtp(1)[1:12] + b"\xbe\xde\x00\x02" + bytes(4)  # 2 words, 1 sent
    no_room = b"\x90" + rtp(1)[1:12] + b"\xbe\xde"  # X set, extension header cut
    for packet in (csrcs, extension, no_room):
        relay.from_b(packet, rtcp=False)
    whole = b"\x90" + rtp(2)[1:12] + b"\xbe\xde\x00\x01" + bytes(4) + b"payload"
    relay.from_b(whole, rtcp=False)
    assert relay.stats[("sip", "lync")].dropped == {"short": 3}
    assert len(lync_wire.sent) == 1 and relay.stats[("sip", "lync")].packets == 1


def test_a_packet_libsrtp_refuses_to_protect_is_counted_and_dropped() -> None:
    """Whatever libsrtp refuses when protecting is one dropped packet ('protect'), never an
    exception out of the relay."""
    relay, lync_wire, _, _, _ = relay_pair(False)

    class Refusing:
        def protect(self, packet: bytes) -> bytes:
            raise pylibsrtp.Error("unsupported parameter")

    assert relay.a.srtp_out is not None
    relay.a.srtp_out.session = Refusing()  # type: ignore[assignment]
    relay.from_b(rtp(1), rtcp=False)
    assert lync_wire.sent == [] and relay.stats[("sip", "lync")].dropped == {"protect": 1}
    assert relay.stats[("sip", "lync")].packets == 0


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=64), st.sampled_from([None, False, True]),
                          st.booleans(), st.booleans()), max_size=20))
def test_any_bytes_either_way_are_relayed_or_counted_never_raised(
        packets: list[tuple[bytes, bool | None, bool, bool]]) -> None:
    """Fuzz: whatever arrives on either side (half of it made to look like RTP/RTCP version
    2), through SRTP unprotect (with and without MKI) or protect, the relay neither raises
    nor loses count: every packet is sent on or counted as dropped."""
    for mki in (False, True):
        relay, lync_wire, sip_wire, _, _ = relay_pair(mki)
        fed = {("lync", "sip"): 0, ("sip", "lync"): 0}
        for data, rtcp, v2, from_lync in packets:
            if v2 and data:
                data = bytes([0x80 | (data[0] & 0x3F)]) + data[1:]
            (relay.from_a if from_lync else relay.from_b)(data, rtcp)
            fed[("lync", "sip") if from_lync else ("sip", "lync")] += 1
        for direction, wire in ((("lync", "sip"), sip_wire), (("sip", "lync"), lync_wire)):
            stats = relay.stats[direction]
            assert len(wire.sent) == stats.packets + stats.rtcp_packets
            assert len(wire.sent) + sum(stats.dropped.values()) == fed[direction]


def test_rtcp_mux_is_told_apart_by_packet_type() -> None:
    wire_a, wire_b = Wire(), Wire()
    relay = StreamRelay("video", Side("a", wire_a), Side("b", wire_b), clock=lambda: 0.0)
    relay.from_a(rtp(1, pt=96))
    relay.from_a(rtcp_sr())
    assert [r for _, r in wire_b.sent] == [False, True]
    assert relay.stats[("a", "b")].rtcp_packets == 1


def test_loss_counts_sequence_gaps_across_wrap_and_ignores_reordering() -> None:
    relay, _, _, _, _ = relay_pair(False)
    sip_to_lync = relay.stats[("sip", "lync")]
    for seq in (65533, 65534, 1, 0, 5):  # 65535 missing, 0 late, 2-4 missing
        relay.from_b(rtp(seq), rtcp=False)
    assert sip_to_lync.packets == 5 and sip_to_lync.lost == 4


def test_media_timeout_names_the_silent_streams() -> None:
    now = [0.0]
    wire = Wire()
    audio = StreamRelay("audio", Side("a", wire), Side("b", wire), clock=lambda: now[0])
    video = StreamRelay("video", Side("a", wire), Side("b", wire), clock=lambda: now[0])
    media = CallMedia([audio, video], timeout=30)
    assert media.check_interval == 5.0  # a quarter of the timeout, at most 5 s
    now[0] = 20.0
    audio.from_a(rtp(1))
    now[0] = 45.0
    assert media.expired(now[0]) is None  # audio spoke 25 s ago
    now[0] = 51.0
    assert media.expired(now[0]) == ("media timeout: no packets for 30 s "
                                     "(audio 31 s, video 51 s)")
    assert CallMedia([audio], timeout=0).expired(1e9) is None
    assert CallMedia([audio], timeout=0).check_interval is None
    assert CallMedia([audio], timeout=0.1).check_interval == 0.05


def test_a_sender_that_keeps_changing_ssrc_is_capped_before_libsrtp() -> None:
    """Each new SSRC costs libsrtp a stream found by linear search: past MAX_SSRCS on one
    stream, new SSRCs are dropped ('ssrc') while the ones already seen keep flowing."""
    relay, lync_wire, _, _, _ = relay_pair(False)
    for n in range(MAX_SSRCS + 5):
        relay.from_b(rtp(n + 1, pt=109, ssrc=n), rtcp=False)
    relay.from_b(rtp(999, pt=109, ssrc=0), rtcp=False)  # an SSRC already seen
    assert relay.stats[("sip", "lync")].dropped == {"ssrc": 5}
    assert len(lync_wire.sent) == MAX_SSRCS + 1
