"""The translating video relay: VSRs toward Lync at connect, repeated until video comes and
sent again when the SIP endpoint asks for a key frame; Lync's PLI and key-frame VSR as a
PLI toward the SIP endpoint; SR, RR, SDES rewritten into the other side's SSRCs, counts and
sequence numbers (tshark reads the compound as valid); NACKs mapped packet for packet or
dropped; Lync's bandwidth requests (VSR bit rate, report extensions, TMMBR) as a TMMBR
toward a SIP endpoint that takes it (tshark reads it), nothing toward one that does not;
a packet lost from Lync asks it for a key frame at once; any bytes either way never
raise. End to end on loopback sockets: x264's RFC 6184 packets through the
relay to a Lync peer over SRTP decode (ffmpeg, with a test-side [MS-H264PF] receiver) to the
source's frames, and Lync's packets echoed back reach the SIP side decoding to them too,
none lost; tshark reads the PACSI and VSR the Lync peer got, with the SDP's values."""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from pathlib import Path

import pylibsrtp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.media import video_rtcp as control
from gateway.media.endpoints import UdpEndpoint
from gateway.media.h264 import stap_a
from gateway.media.relay import Side
from gateway.media.srtp import SrtpContext
from gateway.media.video_plan import SipVideoLimits, VideoPlan
from gateway.media.video_relay import REPEAT, VideoRelay
from gateway.media.vsr import Vsr, VsrEntry
from ice.ports import PortAllocator
from tests.kit.media import Wire, crypto, far_end
from tests.kit.video import PT, dissect, encode, frames, lync_frames, raw_fields

LYNC_PT = 122
LYNC_SSRC = 0x1001
LIMITS = SipVideoLimits(1280, 720, 30.0, 1_500_000)
PLAN = VideoPlan(LYNC_PT, PT, LIMITS, lync_ssrc_range=(0x1000, 0x1063), lync_send_ssrc=0x2000)
SPS = bytes.fromhex("6742c01e8c8d40501e900f0884")  # 640x480 constrained baseline
PPS = bytes.fromhex("68ce3c80")
IDR = bytes([0x65, 0x88, 0x84, 0x21])
SLICE = bytes([0x41, 0x9A, 0x02])


def rtp(seq: int, ts: int, payload: bytes, *, ssrc: int = LYNC_SSRC, pt: int = LYNC_PT,
        marker: bool = True) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq, ts, ssrc) + payload


@dataclass
class Setup:
    relay: VideoRelay
    lync: Wire  # what the relay sends Lync (SRTP)
    sip: Wire
    lync_tx: pylibsrtp.Session  # Lync protecting what it sends
    lync_rx: pylibsrtp.Session  # Lync unprotecting what it gets
    now: list[float]

    def from_lync(self, data: bytes, rtcp: bool) -> None:
        self.relay.from_a(self.lync_tx.protect_rtcp(data) if rtcp else self.lync_tx.protect(
            data), rtcp)

    def at_lync(self) -> list[tuple[bytes, bool]]:
        """What Lync got since last asked, unprotected."""
        got = [(self.lync_rx.unprotect_rtcp(p) if rtcp else self.lync_rx.unprotect(p), rtcp)
               for p, rtcp in self.lync.sent]
        self.lync.sent.clear()
        return got

    def at_sip(self) -> list[tuple[bytes, bool]]:
        got = list(self.sip.sent)
        self.sip.sent.clear()
        return got


def setup(plan: VideoPlan = PLAN) -> Setup:
    theirs, their_key = crypto(False)
    mine, my_key = crypto(False)
    lync, sip = Wire(), Wire()
    now = [0.0]
    relay = VideoRelay(Side("lync", lync, SrtpContext(theirs, inbound=True),
                            SrtpContext(mine, inbound=False)),
                       Side("sip", sip), plan, clock=lambda: now[0])
    return Setup(relay, lync, sip, far_end(their_key, True), far_end(my_key, False), now)


def vsrs(got: list[tuple[bytes, bool]]) -> list[Vsr]:
    """The VSRs among what Lync got (each alone: reduced-size RTCP), reports left out."""
    out = []
    for data, rtcp in got:
        assert rtcp
        if data[1] in (control.SR, control.RR):
            continue
        (part,) = control.split(data) or []
        assert (part.type, part.count, part.body[:4]) == (control.PSFB, control.FMT_AFB,
                                                          (0x2000).to_bytes(4, "big"))
        vsr = Vsr.parse(part.body[8:])
        assert vsr is not None
        out.append(vsr)
    return out


def test_vsr_at_connect_repeated_until_video_and_again_when_sip_asks() -> None:
    s = setup()
    s.relay.poll(0.0)
    (first,) = vsrs(s.at_lync())
    assert first.key_frame and first.entries == (VsrEntry(
        LYNC_PT, 1280, 720, 1_500_000, 0x1F, 1280 * 720),)  # 7.5 to 30 fps
    s.relay.poll(REPEAT / 2)
    assert s.at_lync() == []
    s.relay.poll(REPEAT)
    (again,) = vsrs(s.at_lync())
    assert again == first  # a repeat carries the same Request Id
    s.now[0] = 1.2
    s.from_lync(rtp(7, 3000, stap_a([SPS, PPS, IDR])), False)
    (video,) = s.at_sip()
    assert video[0][1] & 0x7F == PT and video[0][8:12] == s.relay.sip_ssrc.to_bytes(4, "big")
    s.relay.poll(5.0)
    assert s.at_lync() == []  # the key frame came: no more requests
    s.now[0] = 6.0
    s.relay.from_b(control.packet(0, control.RR, s.relay.sip_ssrc.to_bytes(4, "big"))
                   + control.pli(0x5151, s.relay.sip_ssrc), True)
    (asked,) = vsrs(s.at_lync())
    assert asked.key_frame and asked.request_id != first.request_id
    assert s.relay.video_stats()["vsr_sent"] == 3
    assert s.relay.video_stats()["key_frame_requests_to_lync"] == 3


def test_without_vsr_lync_is_asked_with_a_pli() -> None:
    s = setup(VideoPlan(LYNC_PT, PT, LIMITS, lync_takes_vsr=False, lync_send_ssrc=0x2000))
    s.relay.poll(0.0)
    ((data, _),) = s.at_lync()
    assert data == control.pli(0x2000, 0)


def sip_video(s: Setup, count: int, first_seq: int = 100) -> int:
    """`count` access units from the SIP endpoint (SSRC 0x5151), an IDR first; its last
    sequence number, extended."""
    seq = first_seq
    for index in range(count):
        payload = stap_a([SPS, PPS, IDR]) if index == 0 else SLICE
        s.relay.from_b(rtp(seq & 0xFFFF, 3000 * index, payload, ssrc=0x5151, pt=PT), False)
        seq += 1
    return seq - 1


def test_lync_pli_and_key_frame_vsr_become_a_pli_toward_sip() -> None:
    s = setup()
    sip_video(s, 2)
    s.at_lync()
    s.now[0] = 1.0
    s.from_lync(control.pli(LYNC_SSRC, 0x2000), True)
    ((data, rtcp),) = s.at_sip()
    assert rtcp and data == control.receiver_report(s.relay.sip_ssrc) + control.pli(
        s.relay.sip_ssrc, 0x5151)
    s.now[0] = 1.5  # the SIP endpoint answers with a key frame
    s.relay.from_b(rtp(200, 9000, stap_a([SPS, PPS, IDR]), ssrc=0x5151, pt=PT), False)
    s.now[0] = 2.0
    s.at_lync()
    plain = Vsr(9, False, (VsrEntry(LYNC_PT, 640, 480, 500_000, 0x10, 640 * 480),))
    s.from_lync(plain.packet(LYNC_SSRC, 0x2000), True)
    assert s.at_sip() == []  # nothing to do: the SIP side's stream has had its key frame
    s.now[0] = 3.0
    s.from_lync(Vsr(10, True, plain.entries).packet(LYNC_SSRC, 0x2000), True)
    assert len(s.at_sip()) == 1
    stats = s.relay.video_stats()
    assert stats["vsr_received"] == 2 and stats["key_frame_requests_to_sip"] == 2


def test_reports_are_rewritten_into_the_other_sides_terms(tmp_path: Path) -> None:
    s = setup()
    last = sip_video(s, 3, first_seq=65534)  # wraps: the extended number counts it
    to_lync = [p for p, rtcp in s.at_lync() if not rtcp]
    our_last = int.from_bytes(to_lync[-1][2:4], "big")
    block = control.ReportBlock(0x2000, 10, 2, 0x30000 | our_last, 5, 7, 9)
    other = control.ReportBlock(0x9999, 0, 0, 1, 0, 0, 0)  # about a stream that is not ours
    cname = b"\x01\x05lync1\x00"  # CNAME, the end of the list: a whole word with the SSRC
    blocks = block.to_bytes() + other.to_bytes()
    extension = b"\x00\x0a\x00\x08\x00\x00\x00\x01"  # Lync's profile-specific kind
    compound = (control.packet(2, control.RR, LYNC_SSRC.to_bytes(4, "big") + blocks + extension)
                + control.packet(1, control.SDES, LYNC_SSRC.to_bytes(4, "big") + cname)
                + control.packet(0, 207, LYNC_SSRC.to_bytes(4, "big")))  # XR: not passed on
    s.from_lync(compound, True)
    ((first, _),) = s.at_sip()
    rr, sdes = control.split(first) or []
    ours = s.relay.sip_ssrc.to_bytes(4, "big")
    assert (rr.type, rr.count, rr.body[:4]) == (control.RR, 1, ours)
    assert control.ReportBlock.parse(rr.body[4:]) == control.ReportBlock(0x5151, 10, 2, last,
                                                                         5, 7, 9)
    assert len(rr.body) == 28  # the extension left out
    assert sdes.type == control.SDES and sdes.body == s.relay.sip_ssrc.to_bytes(4, "big") + cname
    assert s.relay.video_stats()["rtcp_dropped"] == {"xr_0": 1}
    # Lync's video to the SIP side, then its sender report: counts as the SIP side got it.
    s.from_lync(rtp(7, 3000, stap_a([SPS, PPS, IDR])), False)
    s.from_lync(rtp(8, 6000, SLICE), False)
    sent = [p for p, _ in s.at_sip()]
    ntp_rtp = bytes(range(1, 13))
    s.from_lync(control.packet(0, control.SR, LYNC_SSRC.to_bytes(4, "big") + ntp_rtp
                               + bytes(8)), True)
    ((data, _),) = s.at_sip()
    (sr,) = control.split(data) or []
    assert sr.body == (s.relay.sip_ssrc.to_bytes(4, "big") + ntp_rtp
                       + struct.pack("!II", len(sent), sum(len(p) - 12 for p in sent)))
    rows, expert = dissect(tmp_path, [first, data], "reports", ["rtcp.pt"])
    assert rows == [["201,202"], ["200"]] and "Malformed" not in expert
    assert "Warn" not in expert and "Error" not in expert


def test_nacks_are_mapped_to_the_packets_they_came_from_or_dropped() -> None:
    s = setup()
    big_idr = bytes([0x65]) + bytes(range(256)) * 8
    lync_au = [rtp(40, 3000, stap_a([SPS, PPS]), marker=False),
               rtp(41, 3000, bytes([0x7C, 0x85]) + big_idr[1:1000], marker=False),
               rtp(42, 3000, bytes([0x7C, 0x45]) + big_idr[1000:])]
    for each in lync_au:
        s.from_lync(each, False)
    out = [p for p, _ in s.at_sip()]
    s.at_lync()  # the VSR its first control.packet was the occasion for
    assert len(out) == 3  # a STAP-A of SPS and PPS, the IDR in two FU-As
    second = int.from_bytes(out[1][2:4], "big")
    request = control.nack(0x5151, s.relay.sip_ssrc, [second, (second + 40) & 0xFFFF])
    assert request is not None
    s.relay.from_b(control.packet(0, control.RR, (0x5151).to_bytes(4, "big")) + request, True)
    (data, _), (report, _) = s.at_lync()
    assert report[1] == control.RR  # the SIP endpoint's report goes on too
    (part,) = control.split(data) or []  # alone toward Lync: reduced size
    assert (part.type, part.count) == (control.RTPFB, control.FMT_NACK)
    assert part.body[4:8] == LYNC_SSRC.to_bytes(4, "big")
    assert control.nack_sequences(part) == [41]  # the very packet the first FU-A came in
    s.relay.from_b(control.nack(0x5151, s.relay.sip_ssrc, [12345]) or b"", True)
    assert s.at_lync() == []
    stats = s.relay.video_stats()
    assert stats["nacks_mapped"] == 1 and stats["rtcp_dropped"] == {"nack_unmapped": 1}


def test_a_packet_lost_from_lync_asks_for_a_key_frame_at_once() -> None:
    s = setup()
    s.relay.poll(0.0)
    s.at_lync()  # the VSR at connect
    s.now[0] = 0.5
    s.from_lync(rtp(7, 3000, stap_a([SPS, PPS, IDR])), False)
    s.from_lync(rtp(8, 6000, SLICE), False)
    s.now[0] = 0.6
    s.from_lync(rtp(10, 9000, SLICE), False)  # 9 lost
    (asked,) = vsrs(s.at_lync())  # not a second later, when the VSR would be repeated
    assert asked.key_frame
    sent = [int.from_bytes(p[2:4], "big") for p, _ in s.at_sip()]
    assert [(seq - sent[0]) & 0xFFFF for seq in sent] == [0, 1, 3]  # the gap crosses over
    stats = s.relay.video_stats()["lync->sip"]
    assert isinstance(stats, dict) and stats["packets_lost"] == 1


def tmmbr_plan() -> VideoPlan:
    return VideoPlan(LYNC_PT, PT, LIMITS, lync_ssrc_range=(0x1000, 0x1063),
                     lync_send_ssrc=0x2000, sip_takes_tmmbr=True)


def tmmbrs(got: list[tuple[bytes, bool]]) -> list[tuple[int, int]]:
    out = []
    for data, _ in got:
        for part in control.split(data) or []:
            if (part.type, part.count) == (control.RTPFB, control.FMT_TMMBR):
                out += control.tmmbr_requests(part)
    return out


def test_lync_bandwidth_requests_become_tmmbr_toward_sip(tmp_path: Path) -> None:
    s = setup(tmmbr_plan())
    sip_video(s, 1)  # the SIP endpoint's SSRC, 0x5151, is what a TMMBR names
    s.at_sip()
    s.now[0] = 1.0
    entry = VsrEntry(LYNC_PT, 640, 480, 500_000, 0x10, 640 * 480,
                     bitrate_histogram=(0, 0, 1) + (0,) * 7)
    s.from_lync(Vsr(3, False, (entry,)).packet(LYNC_SSRC, 0x2000), True)
    first = s.at_sip()
    assert tmmbrs(first) == [(0x5151, 530_000)]  # the top of the bucket Lync is in
    limit = (control.EXT_RECEIVER_BANDWIDTH_LIMIT.to_bytes(2, "big") + (12).to_bytes(2, "big")
             + bytes(4) + (256_000).to_bytes(4, "big"))
    s.from_lync(control.packet(0, control.RR, LYNC_SSRC.to_bytes(4, "big") + limit), True)
    second = s.at_sip()
    assert tmmbrs(second) == [(0x5151, 256_000)]
    s.from_lync(control.tmmbr(LYNC_SSRC, 0x2000, 128_000, 40), True)
    third = s.at_sip()
    assert tmmbrs(third) == [(0x5151, 128_000)]
    s.from_lync(Vsr(4, False, (entry,)).packet(LYNC_SSRC, 0x2000), True)
    assert tmmbrs(s.at_sip()) == []  # the least of the limits has not changed
    assert s.relay.video_stats()["tmmbr_sent"] == 3
    rows, expert = dissect(tmp_path, [data for data, _ in first + second + third], "tmmbr", [
        "rtcp.rtpfb.tmmbr.fci.ssrc", "rtcp.rtpfb.tmmbr.fci.mantissa",
        "rtcp.rtpfb.tmmbr.fci.exp", "rtcp.rtpfb.tmmbr.fci.measuredoverhead",
        "rtcp.senderssrc"])
    assert "Malformed" not in expert and "Warn" not in expert
    requests = [row for row in rows if row[0]]  # Lync's RR went on too, rewritten
    assert [(row[0], int(row[1]) << int(row[2]), row[3]) for row in requests] == [
        ("0x00005151", rate, "40") for rate in (530_000, 256_000, 128_000)]
    # Each compound toward the SIP side: our RR, then the TMMBR, both from our SSRC.
    ours = f"0x{s.relay.sip_ssrc:08x}"
    assert {row[4] for row in requests} == {f"{ours},{ours}"}


def test_no_tmmbr_toward_an_endpoint_that_does_not_take_it() -> None:
    s = setup()
    sip_video(s, 1)
    s.at_sip()
    entry = VsrEntry(LYNC_PT, 640, 480, 500_000, 0x10, 640 * 480)
    s.from_lync(Vsr(3, False, (entry,)).packet(LYNC_SSRC, 0x2000), True)
    assert tmmbrs(s.at_sip()) == [] and s.relay.video_stats()["tmmbr_sent"] == 0


def test_garbage_rtcp_is_counted_and_video_goes_on() -> None:
    s = setup()
    s.from_lync(b"\x80\xc9\x00\x09" + bytes(8), True)  # says 40 octets, has 12
    s.from_lync(control.packet(3, control.RR, bytes(4)), True)  # three blocks announced, none there
    s.from_lync(rtp(7, 3000, stap_a([SPS, PPS, IDR])), False)
    assert len(s.at_sip()) == 1
    assert s.relay.video_stats()["rtcp_dropped"] == {"malformed": 1, "rr": 1}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=120), st.sampled_from([None, False, True]),
                          st.booleans(), st.sampled_from([0, 200, 201, 202, 203, 205, 206]),
                          st.integers(0, 31)), max_size=25))
def test_any_bytes_either_way_never_raise(
        packets: list[tuple[bytes, bool | None, bool, int, int]]) -> None:
    """Fuzz with the Lync side in the clear (so every byte reaches the parsers): raw bytes,
    and RTCP-shaped ones (version 2, a real control.packet type and count, a random body) as RTP,
    RTCP or told by type; polls between. Nothing raises; what goes out is version 2."""
    lync, sip = Wire(), Wire()
    now = [0.0]
    relay = VideoRelay(Side("lync", lync), Side("sip", sip), PLAN, clock=lambda: now[0])
    for data, rtcp, from_lync, kind, count in packets:
        if kind:
            body = data[:len(data) // 4 * 4]
            data = control.packet(count, kind, body) + data[len(body):]
        (relay.from_a if from_lync else relay.from_b)(data, rtcp)
        now[0] += 0.3
        relay.poll(now[0])
    for sent, _ in lync.sent + sip.sent:
        assert sent[0] >> 6 == 2


# -- end to end, on loopback sockets ----------------------------------------------------------


@dataclass
class EndToEnd:
    source: list[bytes]  # x264 via rtph264pay, as the SIP endpoint sends it
    at_lync: list[bytes]  # RTP Lync got, unprotected
    lync_rtcp: list[bytes]  # RTCP Lync got, unprotected
    at_sip: list[bytes]  # RTP the SIP endpoint got back
    relay: VideoRelay


class Peer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.got.put_nowait(data)


async def run_end_to_end(source: list[bytes]) -> EndToEnd:
    loop = asyncio.get_running_loop()
    theirs, their_key = crypto(False)
    mine, my_key = crypto(False)
    lync_tx, lync_rx = far_end(their_key, True), far_end(my_key, False)
    sip_transport, sip_peer = await loop.create_datagram_endpoint(Peer, local_addr=(
        "127.0.0.1", 0))
    lync_transport, lync_peer = await loop.create_datagram_endpoint(Peer, local_addr=(
        "127.0.0.1", 0))
    ports = PortAllocator(47000, 47999)
    relays: list[VideoRelay] = []
    lync_end = UdpEndpoint.open(ports, "127.0.0.1", lync_transport.get_extra_info("sockname"),
                                None, lambda data, rtcp: relays[0].from_a(data, rtcp))
    sip_end = UdpEndpoint.open(ports, "127.0.0.1", sip_transport.get_extra_info("sockname"),
                               None, lambda data, rtcp: relays[0].from_b(data, rtcp))
    # Lync announces the SSRC range our packets carry: what it echoes passes as its own.
    plan = VideoPlan(LYNC_PT, PT, SipVideoLimits(640, 360, 30.0, 1_000_000),
                     lync_ssrc_range=(0x2000, 0x2063), lync_send_ssrc=0x2000)
    relay = VideoRelay(
        Side("lync", lambda p, _: lync_end.send(p), SrtpContext(theirs, inbound=True),
             SrtpContext(mine, inbound=False)),
        Side("sip", lambda p, _: sip_end.send(p)), plan, clock=loop.time)
    relays.append(relay)
    relay.poll(loop.time())
    at_lync: list[bytes] = []
    rtcp: list[bytes] = []
    at_sip: list[bytes] = []

    async def lync() -> None:
        while True:
            data = await lync_peer.got.get()
            if 192 <= data[1] <= 223:
                rtcp.append(lync_rx.unprotect_rtcp(data))
                continue
            clear = lync_rx.unprotect(data)
            at_lync.append(clear)
            lync_transport.sendto(lync_tx.protect(clear), ("127.0.0.1", lync_end.port))

    async def sip() -> None:
        while True:
            data = await sip_peer.got.get()
            if not 192 <= data[1] <= 223:
                at_sip.append(data)

    tasks = [asyncio.create_task(lync()), asyncio.create_task(sip())]
    try:
        for index, each in enumerate(source):
            sip_transport.sendto(each, ("127.0.0.1", sip_end.port))
            if index % 4 == 3:
                await asyncio.sleep(0.002)
        for _ in range(200):
            await asyncio.sleep(0.01)
            if relay.from_lync.stats.access_units_out == relay.to_lync.stats.access_units_out:
                break
        await asyncio.sleep(0.05)
    finally:
        for task in tasks:
            task.cancel()
        lync_end.close(ports)
        sip_end.close(ports)
        lync_transport.close()
        sip_transport.close()
    return EndToEnd(source, at_lync, rtcp, at_sip, relay)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("video_relay")


@pytest.fixture(scope="module")
def end_to_end(tmp: Path) -> EndToEnd:
    source = encode(tmp, frames=60, key_interval=30)
    return asyncio.run(run_end_to_end(source))


def test_end_to_end_frames_are_the_sources_both_ways_none_lost(
        tmp: Path, end_to_end: EndToEnd) -> None:
    expected = frames(tmp, end_to_end.source, "source")
    assert len(expected) == 60
    assert lync_frames(tmp, end_to_end.at_lync, "at_lync") == expected
    assert frames(tmp, end_to_end.at_sip, "at_sip") == expected
    stats = end_to_end.relay.video_stats()
    for direction in ("lync->sip", "sip->lync"):
        counters = stats[direction]
        assert isinstance(counters, dict)
        assert counters["access_units_out"] == 60 and counters["key_frames"] == 2
        assert counters["frames_dropped"] == {} and (counters["width"], counters["height"]) == (
            640, 360)


def test_tshark_reads_the_vsr_and_pacsi_lync_got(tmp: Path, end_to_end: EndToEnd) -> None:
    prefix = "rtcp.psfb.ms."
    rows, expert = dissect(tmp, end_to_end.lync_rtcp[:1], "vsr", [
        prefix + name for name in (
            "afb_type", "length", "msi", "vsr.num_entries", "vsr.entry_length",
            "vsr.entry.payload_type", "vsr.entry.ucconfig_mode", "vsr.entry.no_sp_baseline",
            "vsr.entry.max_width", "vsr.entry.max_height", "vsr.entry.min_bitrate",
            "vsr.entry.frame_rate_30", "vsr.entry.frame_rate_60", "vsr.entry.max_pixels")])
    assert "Malformed" not in expert and "Warn" not in expert
    assert rows == [["1", "88", "0xfffffffe", "1", "68", str(LYNC_PT), "1", "1", "640", "360",
                     "1000000", "1", "0", str(640 * 360)]]
    # The key-frame octet, where tshark finds it: 0x80, [MS-RTP]'s first bit (tshark itself
    # masks 0x01, see gateway.media.vsr).
    assert raw_fields(tmp, end_to_end.lync_rtcp[:1], "vsr_raw",
                      prefix + "vsr.key_frame_request") == ["80"]
    rows, expert = dissect(tmp, end_to_end.at_lync, "pacsi", [
        "h264.sei.ms.layout.desc.display_width", "h264.sei.ms.layout.desc.display_height"],
        payload_type=LYNC_PT)
    assert "Malformed" not in expert and "Error" not in expert
    assert {tuple(row) for row in rows if row[0]} == {("640", "360")}
