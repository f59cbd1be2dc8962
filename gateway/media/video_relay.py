"""A video stream translated between Lync ([MS-H264PF] X-H264UC, SRTP) and a standard SIP
endpoint (RFC 6184 H264): the relay's SRTP and checks, the two translators of
`video_translate` in the middle, RTCP rewritten so that each side sees one clean stream
from the gateway (`video_rtcp`), and key frames asked for on each side's behalf: Video
Source Requests toward Lync (`vsr`), PLIs toward the SIP endpoint. Sans-I/O, like
`StreamRelay`: packets and the time in, `Side.send` out; `poll` is called by the adapter
every POLL_INTERVAL and on every packet.

Feedback, and what becomes of it:
- the SIP endpoint's PLI or FIR: a key-frame request toward Lync (a VSR with the key-frame
  bit when Lync takes VSRs, else a PLI), repeated every REPEAT until an IDR comes;
- Lync's PLI, or a VSR with the key-frame bit (or any VSR while no IDR has gone to Lync):
  a PLI toward the SIP endpoint (never FIR: an endpoint that only honours FIR waits for
  its next periodic key frame);
- NACKs: mapped onto the sequence numbers of the other side (every packet of the access
  units concerned), dropped when nothing maps;
- Lync's bandwidth requests (a VSR's bit rate, the Receiver-side Bandwidth Limit and Policy
  Server Bandwidth extensions of its reports, a TMMBR about our stream): the least of them
  and of the SDP's rate, as a TMMBR toward the SIP endpoint when it changes, where the
  endpoint's SDP said it takes TMMBR;
- everything else (REMB, XR, APP, the SIP side's TMMBR): dropped and counted.

Toward Lync, feedback goes out alone, as reduced-size RTCP (RFC 5506, which [MS-RTP] 3.1.5
requires of feedback); toward the SIP endpoint every compound starts with a report."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.media.errors import PacketError
from gateway.media.relay import Side, StreamRelay
from gateway.media.rtp import StreamStats, is_rtcp
from gateway.media.video_plan import VideoPlan
from gateway.media.video_rtcp import (
    APP,
    BYE,
    EXT_POLICY_SERVER_BANDWIDTH,
    EXT_RECEIVER_BANDWIDTH_LIMIT,
    FMT_AFB,
    FMT_FIR,
    FMT_NACK,
    FMT_PLI,
    FMT_TMMBR,
    PSFB,
    RR,
    RTPFB,
    SDES,
    SR,
    XR,
    Rtcp,
    bye,
    map_block,
    nack,
    nack_sequences,
    pli,
    receiver_report,
    report_extensions,
    rewrite_report,
    rewrite_sdes,
    split,
    tmmbr,
    tmmbr_requests,
)
from gateway.media.video_translate import DEFAULT_MTU, FromLync, ToLync
from gateway.media.vsr import Vsr, entry_for, layout_fps

POLL_INTERVAL = 0.1  # seconds: the access-unit timeout's resolution, and of the repeats
REPEAT = 1.0  # seconds between repeats of a key-frame request (or VSR) until it is answered
# What a TMMBR counts per packet on top of its payload (RFC 5104 4.2.1.2): IPv4, UDP and
# the RTP header.
PACKET_OVERHEAD = 20 + 8 + 12
KEY_FRAME_GAP = 0.25  # the least time between two key-frame requests toward one sender
RTCP_NAMES = {SR: "sr", RR: "rr", SDES: "sdes", BYE: "bye", APP: "app", RTPFB: "rtpfb",
              PSFB: "psfb", XR: "xr"}


@dataclass
class FeedbackStats:
    """The control messages of one video stream, both ways."""

    vsr_sent: int = 0
    vsr_received: int = 0
    key_frame_requests_to_lync: int = 0  # VSRs with the key-frame bit, or PLIs
    key_frame_requests_to_sip: int = 0  # PLIs
    nacks_mapped: int = 0
    tmmbr_sent: int = 0  # bit rate limits passed on to the SIP endpoint
    rtcp_dropped: dict[str, int] = field(default_factory=dict)  # malformed, xr, tmmbr ...

    def drop(self, kind: str) -> None:
        self.rtcp_dropped[kind] = self.rtcp_dropped.get(kind, 0) + 1

    def as_dict(self) -> dict[str, object]:
        return {"vsr_sent": self.vsr_sent, "vsr_received": self.vsr_received,
                "key_frame_requests_to_lync": self.key_frame_requests_to_lync,
                "key_frame_requests_to_sip": self.key_frame_requests_to_sip,
                "nacks_mapped": self.nacks_mapped, "tmmbr_sent": self.tmmbr_sent,
                "rtcp_dropped": dict(self.rtcp_dropped)}


class _Asking:
    """When to ask one sender for a key frame: as soon as one is wanted, then every REPEAT
    until it comes; when the far receiver asks, at once unless the last request was less
    than KEY_FRAME_GAP ago."""

    __slots__ = ("last", "next")

    def __init__(self) -> None:
        self.next = 0.0
        self.last = float("-inf")

    def due(self, wanted: bool, now: float) -> bool:
        if not wanted or now < self.next:
            return False
        self.last, self.next = now, now + REPEAT
        return True

    def hurry(self, now: float) -> None:
        self.next = min(self.next, max(now, self.last + KEY_FRAME_GAP))


@dataclass(slots=True)
class _Leg:
    """One side as the gateway faces it: where packets go, the gateway's SSRC toward it,
    and the translator that writes what it receives."""

    side: Side
    ssrc: int
    writer: FromLync | ToLync
    stats: StreamStats  # of what goes toward it


class VideoRelay(StreamRelay):
    """`a` is the Lync side, `b` the SIP side."""

    def __init__(self, lync: Side, sip: Side, plan: VideoPlan, clock: Callable[[], float],
                 *, mtu: int = DEFAULT_MTU) -> None:
        super().__init__("video", lync, sip, clock)
        self.plan = plan
        lync_ssrc = plan.lync_send_ssrc if plan.lync_send_ssrc is not None else (
            secrets.randbits(32))
        sip_ssrc = secrets.randbits(32)
        self.from_lync = FromLync(ssrc_range=plan.lync_ssrc_range, ssrc=sip_ssrc,
                                  payload_type=plan.sip_payload_type, mtu=mtu,
                                  first_sequence=secrets.randbits(16))
        self.to_lync = ToLync(ssrc=lync_ssrc, payload_type=plan.lync_payload_type,
                              bitrate=plan.limits.bitrate_bps, fps=layout_fps(plan.limits.fps),
                              mtu=mtu, first_sequence=secrets.randbits(16))
        self.feedback = FeedbackStats()
        self._lync = _Leg(lync, lync_ssrc, self.to_lync, self._b_to_a)
        self._sip = _Leg(sip, sip_ssrc, self.from_lync, self._a_to_b)
        self._ask_lync = _Asking()
        self._ask_sip = _Asking()
        self._entry = entry_for(plan.limits, plan.lync_payload_type)
        self._vsr: Vsr | None = None
        self._units_at_vsr = 0
        self._request_id = secrets.randbits(16)
        # What Lync said it takes, by where it said it (a VSR, its reports' bandwidth
        # extensions, a TMMBR); the least of them, and of the SDP's, is asked of the SIP
        # endpoint.
        self._lync_limits: dict[str, int] = {}
        self._asked_rate = plan.limits.bitrate_bps

    @property
    def lync_ssrc(self) -> int:
        return self._lync.ssrc

    @property
    def sip_ssrc(self) -> int:
        return self._sip.ssrc

    def from_a(self, packet: bytes, rtcp: bool | None = None) -> None:
        self._arrived(packet, rtcp, self._lync, self._sip)

    def from_b(self, packet: bytes, rtcp: bool | None = None) -> None:
        self._arrived(packet, rtcp, self._sip, self._lync)

    def poll(self, now: float) -> None:
        """Drop access units left open too long; ask for key frames that are due."""
        self.to_lync.poll(now)
        self._ask(now)

    def video_stats(self) -> dict[str, object]:
        """Per direction, the translator's counters (packets, key frames, frames dropped,
        picture size); and the feedback both ways. For the CDR and the status API."""
        return {"lync->sip": self.from_lync.stats.as_dict(),
                "sip->lync": self.to_lync.stats.as_dict(), **self.feedback.as_dict()}

    def _arrived(self, packet: bytes, rtcp: bool | None, src: _Leg, dst: _Leg) -> None:
        if rtcp is None:
            rtcp = is_rtcp(packet)
        stats = dst.stats
        clear = self._open(packet, rtcp, src.side, stats)
        if clear is None:
            return
        now = self.clock()
        stats.last_packet = now  # arriving, even when no packet out is complete yet
        if rtcp:
            self._control(clear, src, dst, now)
            self._ask(now)
            return
        writer = dst.writer
        wanted = writer.key_frame_wanted
        outs = writer.push(clear, now)
        if outs:
            # `_deliver` without its SSRC count (a translator's packets carry its one SSRC)
            # or a clock read of its own: the packets go out in the same instant.
            side = dst.side
            send = side.send
            protect = None if side.srtp_out is None else side.srtp_out.protect
            for out in outs:
                if protect is None:
                    wire = out
                else:
                    try:
                        wire = protect(out, False)
                    except PacketError as exc:
                        stats.drop(exc.kind)
                        continue
                stats.rtp(out, now)
                send(wire, False)
        # Only this stream's wish can have changed; the other's repeats are `poll`'s.
        if writer.key_frame_wanted:
            if not wanted:  # a loss: asked at once, as the far receiver would
                self._key_frame_asked(dst, now)
            self._ask(now)

    # -- key frames ------------------------------------------------------------------------

    def _ask(self, now: float) -> None:
        if self._ask_lync.due(self.from_lync.key_frame_wanted, now):
            self._request_from_lync()
        if self.to_lync.source is not None and self._ask_sip.due(
                self.to_lync.key_frame_wanted, now):
            self._send(pli(self._sip.ssrc, self.to_lync.source), self._sip)
            self.feedback.key_frame_requests_to_sip += 1

    def _request_from_lync(self) -> None:
        """A VSR (Lync's way to be asked for video at all, and for a key frame), the same
        request again while no access unit has come since it; a PLI where Lync takes no
        VSRs."""
        self.feedback.key_frame_requests_to_lync += 1
        if not self.plan.lync_takes_vsr:
            self._send(pli(self._lync.ssrc, self._lync_media()), self._lync)
            return
        units = self.from_lync.stats.access_units_out
        if self._vsr is None or units != self._units_at_vsr:
            self._request_id = (self._request_id + 1) & 0xFFFF
            self._vsr = Vsr(self._request_id, True, (self._entry,))
            self._units_at_vsr = units
        self._send(self._vsr.packet(self._lync.ssrc, self._lync_media()), self._lync)
        self.feedback.vsr_sent += 1

    def _lync_media(self) -> int:
        """The SSRC feedback toward Lync is about: its video's, or the first it announced."""
        if self.from_lync.source is not None:
            return self.from_lync.source
        return self.plan.lync_ssrc_range[0] if self.plan.lync_ssrc_range else 0

    def _key_frame_asked(self, src: _Leg, now: float) -> None:
        """`src`, a receiver, asked for a key frame: passed on to the other side's sender."""
        if src is self._sip:
            self.from_lync.key_frame_wanted = True
            self._ask_lync.hurry(now)
        else:
            self.to_lync.key_frame_wanted = True
            self._ask_sip.hurry(now)

    # -- RTCP --------------------------------------------------------------------------------

    def _control(self, data: bytes, src: _Leg, dst: _Leg, now: float) -> None:
        parts = split(data)
        if parts is None:
            self.feedback.drop("malformed")
            return
        reports: list[bytes] = []
        for part in parts:
            out = self._rewrite(part, src, dst, now)
            if out is not None:
                reports.append(out)
        if reports:
            self._send(b"".join(reports), dst)

    def _rewrite(self, part: Rtcp, src: _Leg, dst: _Leg, now: float) -> bytes | None:
        """What `part` from `src` becomes toward `dst` (None: nothing, or sent already)."""
        kind = part.type
        if kind in (SR, RR):
            if src is self._lync:
                self._lync_reports(part)
            return self._counted(rewrite_report(
                part, dst.ssrc, (dst.writer.stats.packets_out, dst.writer.stats.octets_out),
                lambda block: map_block(block, src.ssrc, src.writer.source,
                                        src.writer.source_sequence)), kind)
        if kind == SDES:
            return self._counted(rewrite_sdes(part, dst.ssrc), kind)
        if kind == BYE:
            return bye(dst.ssrc)
        if kind == RTPFB and part.count == FMT_NACK:
            self._nack(part, src, dst)
        elif kind == RTPFB and part.count == FMT_TMMBR and src is self._lync:
            for ssrc, bitrate in tmmbr_requests(part):
                if ssrc == self._lync.ssrc:
                    self._lync_limit("tmmbr", bitrate)
        elif kind == PSFB and part.count in (FMT_PLI, FMT_FIR):
            self._key_frame_asked(src, now)
        elif kind == PSFB and part.count == FMT_AFB and src is self._lync:
            self._lync_afb(part, now)
        else:
            self.feedback.drop(f"{RTCP_NAMES.get(kind, str(kind))}_{part.count}")
        return None

    def _counted(self, out: bytes | None, kind: int) -> bytes | None:
        if out is None:
            self.feedback.drop(RTCP_NAMES[kind])
        return out

    def _nack(self, part: Rtcp, src: _Leg, dst: _Leg) -> None:
        """A NACK about the packets `src` got from us: the packets of `dst` they came from."""
        wanted: list[int] = []
        for seq in nack_sequences(part):
            source = src.writer.source_sequence(seq)
            if source is not None:
                wanted.append(source & 0xFFFF)
        message = None if src.writer.source is None else nack(dst.ssrc, src.writer.source,
                                                               wanted)
        if message is None:
            self.feedback.drop("nack_unmapped")
            return
        self.feedback.nacks_mapped += 1
        self._send(message, dst)

    def _lync_afb(self, part: Rtcp, now: float) -> None:
        try:
            vsr = Vsr.parse(part.body[8:])
        except ValueError:
            self.feedback.drop("vsr_malformed")
            return
        if vsr is None:
            self.feedback.drop("afb")
            return
        self.feedback.vsr_received += 1
        rates = [entry.bitrate for entry in vsr.entries
                 if entry.payload_type == self.plan.lync_payload_type]
        if rates:
            self._lync_limit("vsr", max(rates))
        if vsr.key_frame or self.to_lync.key_frame_wanted:
            self._key_frame_asked(self._lync, now)

    def _lync_reports(self, part: Rtcp) -> None:
        """[MS-RTP] bandwidth limits in Lync's own reports, on what it receives from us."""
        found = report_extensions(part)
        for kind, name in ((EXT_RECEIVER_BANDWIDTH_LIMIT, "receiver_limit"),
                           (EXT_POLICY_SERVER_BANDWIDTH, "policy_server")):
            if found.get(kind):
                self._lync_limit(name, found[kind])

    def _lync_limit(self, source: str, bitrate: int) -> None:
        """Lync takes at most `bitrate` (as `source` says): the SIP endpoint, which sends
        what Lync gets, is asked for the least Lync and the SDP allow, by a TMMBR (RFC 5104)
        when it changes and the endpoint's SDP said it takes TMMBR."""
        self._lync_limits[source] = bitrate
        rate = min(self.plan.limits.bitrate_bps, *self._lync_limits.values())
        media = self.to_lync.source
        if rate == self._asked_rate or not self.plan.sip_takes_tmmbr or media is None:
            return
        self._asked_rate = rate
        self._send(tmmbr(self._sip.ssrc, media, rate, PACKET_OVERHEAD), self._sip)
        self.feedback.tmmbr_sent += 1

    def _send(self, message: bytes, dst: _Leg) -> None:
        """RTCP of ours (or rewritten) toward `dst`: alone toward Lync (reduced size), and
        after a report toward the SIP endpoint when it has none."""
        if dst is self._sip and message[1] not in (SR, RR):
            message = receiver_report(dst.ssrc) + message
        self._deliver(message, True, dst.side, dst.stats)
