"""The interface the calls use to anchor media, so that an external engine (rtpengine over
its ng protocol) can stand in for the built-in relay on nodes that outgrow one process.

A call first asks for the SIP-side ports of its streams (they go into the SDP toward the
SIP endpoint), then, once ICE toward Lync has selected its pairs and both answers are in,
connects each stream with its keys and payload-type map. Mid-call, a stream may be stopped
(a re-offer removed it) or a new one reserved and joined (video added).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol

from gateway.media.call import CallMedia
from gateway.media.endpoints import IceMedia, Receive, SipMedia
from gateway.media.errors import MediaError
from gateway.media.relay import Side, StreamRelay
from gateway.media.srtp import SrtpContext
from gateway.media.video_plan import VideoPlan
from gateway.media.video_relay import POLL_INTERVAL, VideoRelay
from ice.ports import PortAllocator
from ice.session import IceSession
from sdp.anchor import Remote
from sdp.attributes import Crypto


@dataclass(frozen=True, slots=True)
class StreamPlan:
    """How one negotiated stream is relayed between the Lync (ICE) and SIP sides."""

    media: str
    ice: IceSession  # its selected pairs carry the Lync side
    sip_remote: tuple[str, int]  # RTP address from the SIP side's SDP
    sip_remote_rtcp: tuple[str, int] | None = None  # None: rtcp-mux, RTCP goes with RTP
    lync_key_in: Crypto | None = None  # Lync's a=crypto (what it sends with)
    lync_key_out: Crypto | None = None  # ours toward Lync
    sip_key_in: Crypto | None = None
    sip_key_out: Crypto | None = None
    # Payload types renumbered in packets toward each side (sdp.offer_answer.payload_remap).
    lync_pt_map: dict[int, int] = field(default_factory=dict)
    sip_pt_map: dict[int, int] = field(default_factory=dict)
    # Set for video translated between X-H264UC and H264; None relays packets as they are.
    video: VideoPlan | None = None


class MediaBackend(Protocol):
    async def reserve(self, host: str, count: int, rtcp_mux: bool) -> list[int]:
        """SIP-side RTP ports for `count` streams; unless muxed, each even with RTCP on the
        next one."""
        ...

    def connect(self, plans: list[StreamPlan | None], timeout: float) -> CallMedia:
        """Start relaying; the streams in `plans` use the reserved ports in order."""
        ...

    def close(self) -> None: ...


class BuiltinRelay:
    """The in-process relay (gateway.media.relay) as a MediaBackend for one call."""

    def __init__(self, ports: PortAllocator) -> None:
        self.ports = ports
        self._sip: list[SipMedia] = []
        self._relays: list[StreamRelay] = []
        # A translated video stream's timer: its access-unit timeout and key-frame requests.
        self._polls: dict[int, asyncio.TimerHandle] = {}
        self.media: CallMedia | None = None

    async def reserve(self, host: str, count: int, rtcp_mux: bool) -> list[int]:
        first = len(self._sip)  # mid-call, after the ports the call already has
        try:
            for _ in range(count):
                # The remote is not known yet: the first packet latches, and connect()
                # points the endpoint at the SDP's address.
                self._sip.append(SipMedia.open(
                    self.ports, host, ("0.0.0.0", 9), None if rtcp_mux else ("0.0.0.0", 9),
                    self._into(len(self._sip), from_sip=True)))
        except BaseException:
            self.close()
            raise
        return [s.rtp.port for s in self._sip[first:]]

    def connect(self, plans: list[StreamPlan | None], timeout: float) -> CallMedia:
        """`plans[i]` uses the i-th reserved port; None leaves that stream unrelayed (the
        SIP side rejected it)."""
        if len(plans) != len(self._sip):
            raise MediaError(f"{len(plans)} streams to relay but {len(self._sip)} reserved")
        for plan in plans:
            self._join(plan)
        self.media = CallMedia([r for r in self._relays if r.media != "unused"],
                               timeout=timeout)
        return self.media

    def add_stream(self, index: int, plan: StreamPlan) -> None:
        """Join stream `index` to the running relay (video added mid-call): the port
        `reserve` gave it after those `connect` took; its counters join the call's. Ports
        reserved before it and never joined stay unrelayed."""
        if self.media is None or not len(self._relays) <= index < len(self._sip):
            raise MediaError(f"no port reserved for stream {index} added to the relay")
        while len(self._relays) < index:
            self._join(None)
        self.media.streams.append(self._join(plan))

    def stop_stream(self, index: int) -> None:
        """Stop relaying stream `index` (a re-offer removed it) while the others go on: its
        poll timer cancelled, its SIP-side port closed and freed. Its relay's counters stay
        in `media` for the CDR."""
        handle = self._polls.pop(index, None)
        if handle is not None:
            handle.cancel()
        if index < len(self._sip):
            self._sip[index].close(self.ports)  # again at close(): a no-op by then

    def _join(self, plan: StreamPlan | None) -> StreamRelay:
        """The relay of the next stream (None: unrelayed, the SIP side rejected it), on the
        next reserved port."""
        loop = asyncio.get_running_loop()
        index, sip = len(self._relays), self._sip[len(self._relays)]
        if plan is None:
            relay = StreamRelay("unused", Side("lync", _nowhere), Side("sip", _nowhere),
                                clock=loop.time)
            self._relays.append(relay)
            return relay
        sip.rtp.point_at(plan.sip_remote)
        if sip.rtcp_endpoint is not None:
            sip.rtcp_endpoint.point_at(plan.sip_remote_rtcp or plan.sip_remote)
        lync = IceMedia(plan.ice, self._into(index, from_sip=False))
        lync_side = Side("lync", lync.send, _ctx(plan.lync_key_in, True),
                         _ctx(plan.lync_key_out, False), pt_map=plan.lync_pt_map)
        sip_side = Side("sip", sip.send, _ctx(plan.sip_key_in, True),
                        _ctx(plan.sip_key_out, False), pt_map=plan.sip_pt_map)
        if plan.video is None:
            relay = StreamRelay(plan.media, lync_side, sip_side, clock=loop.time)
            self._relays.append(relay)
            return relay
        video = VideoRelay(lync_side, sip_side, plan.video, clock=loop.time)
        self._relays.append(video)
        self._poll(index, video)  # ICE is up: the first VSR goes now
        return video

    def _into(self, index: int, *, from_sip: bool) -> Receive:
        def receive(data: bytes, rtcp: bool | None) -> None:
            if index < len(self._relays):  # packets before connect() have nowhere to go
                relay = self._relays[index]
                (relay.from_b if from_sip else relay.from_a)(data, rtcp)

        return receive

    def _poll(self, index: int, video: VideoRelay) -> None:
        loop = asyncio.get_running_loop()
        video.poll(loop.time())
        self._polls[index] = loop.call_later(POLL_INTERVAL, self._poll, index, video)

    def close(self) -> None:
        for handle in self._polls.values():
            handle.cancel()
        self._polls.clear()
        for sip in self._sip:
            sip.close(self.ports)
        self._sip.clear()


def _nowhere(packet: bytes, rtcp: bool) -> None:
    """Where packets of a stream nobody relays go."""


def _ctx(crypto: Crypto | None, inbound: bool) -> SrtpContext | None:
    return None if crypto is None else SrtpContext(crypto, inbound=inbound)


class SipBridge:
    """Both legs plain SIP (no ICE): each stream gets a port toward the caller and one toward
    the callee, and the relay joins them. RTCP on the port after each (even) RTP port unless
    the offer asked for rtcp-mux. Payload types pass unchanged: each side gets the other's
    description with its codecs as written, so each sends with the numbers the receiver
    chose (RFC 3264 5.1)."""

    def __init__(self, ports: PortAllocator) -> None:
        self.ports = ports
        self.caller: list[SipMedia] = []
        self.callee: list[SipMedia] = []
        self._relays: list[StreamRelay] = []
        self.media: CallMedia | None = None

    def reserve(self, host: str, muxed: list[bool]) -> tuple[list[int], list[int]]:
        """(ports toward the caller, ports toward the callee), one per stream; at once."""
        unknown = ("0.0.0.0", 9)
        try:
            for index, mux in enumerate(muxed):
                self.caller.append(SipMedia.open(
                    self.ports, host, unknown, None if mux else unknown,
                    self._into(index, from_caller=True)))
                self.callee.append(SipMedia.open(
                    self.ports, host, unknown, None if mux else unknown,
                    self._into(index, from_caller=False)))
        except BaseException:
            self.close()
            raise
        return [m.rtp.port for m in self.caller], [m.rtp.port for m in self.callee]

    def connect(self, media: list[str], caller: list[Remote | None],
                callee: list[Remote | None], timeout: float) -> CallMedia:
        loop = asyncio.get_running_loop()
        self.repoint(caller_side=True, remotes=caller)
        self.repoint(caller_side=False, remotes=callee)
        for index, kind in enumerate(media):
            self._relays.append(StreamRelay(kind, Side("caller", self.caller[index].send),
                                            Side("callee", self.callee[index].send),
                                            clock=loop.time))
        self.media = CallMedia(self._relays, timeout=timeout)
        return self.media

    def repoint(self, *, caller_side: bool, remotes: list[Remote | None]) -> None:
        """Send each stream toward the addresses a (re-)offer or answer of that side gives;
        a rejected stream or the null address of an old-style hold leaves it as it was."""
        for endpoint, remote in zip(self.caller if caller_side else self.callee, remotes,
                                    strict=False):
            if remote is None or remote.rtp[0] in ("0.0.0.0", "::"):
                continue
            endpoint.rtp.point_at(remote.rtp)
            if endpoint.rtcp_endpoint is not None:
                endpoint.rtcp_endpoint.point_at(remote.rtcp)

    def _into(self, index: int, *, from_caller: bool) -> Receive:
        def receive(data: bytes, rtcp: bool | None) -> None:
            if index < len(self._relays):
                relay = self._relays[index]
                (relay.from_a if from_caller else relay.from_b)(data, rtcp)

        return receive

    def close(self) -> None:
        for endpoint in (*self.caller, *self.callee):
            endpoint.close(self.ports)
        self.caller.clear()
        self.callee.clear()
