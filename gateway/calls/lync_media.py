"""The media of a call whose caller speaks ICE (a Lync/SfB client, its offer usually the
RFC 5245 part of a multipart body): the gateway terminates ICE itself and anchors the media.

1. `prepare()`: an ICE session per audio/video stream (controlled: Lync offered), ports for
   the SIP side, and the plain offer the SIP side gets (Lync's codecs and payload types,
   no ICE, no Microsoft attributes).
2. `answer_lync()`: with the SIP side's answer, the one application/sdp Lync gets back
   (sdp.offer_answer: common codecs, SRTP per policy, our candidates), then ICE runs.
3. When ICE selects its pairs, the relay joins each stream; Lync's second INVITE (with
   a=remote-candidates) is answered like any refresh.

Streams Lync offers that the SIP side cannot carry (application sharing over TCP) are
rejected in the answer with port 0.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway import logs
from gateway.media.backend import BuiltinRelay, StreamPlan
from gateway.media.call import CallMedia
from ice.errors import IceError
from ice.ports import PortAllocator
from ice.session import IceSession, TurnSettings
from sdp.errors import SdpError
from sdp.model import Line, Media, Section, SessionDescription
from sdp.offer_answer import Answer, Codec, Encryption, MediaPlan, answer
from sdp.parse import parse_sdp

log = logs.get(__name__)
RELAYED = ("audio", "video")  # what the relay carries; the rest is rejected
# Lync's offer lines the SIP side gets unchanged (codecs and direction).
KEPT = ("rtpmap", "fmtp", "sendrecv", "sendonly", "recvonly", "inactive", "ptime")


def wants_ice(offer: SessionDescription) -> bool:
    return any(m.has("ice-ufrag") for m in offer.media) or offer.session.has("ice-ufrag")


@dataclass
class LyncMedia:
    offer: SessionDescription  # Lync's (the RFC 5245 part)
    ports: PortAllocator
    address: str
    static_nat: str
    encryption: Encryption
    on_timeout: Callable[[str], None]
    turn: TurnSettings | None = None  # the rule's or location's TURN server (Lync Edge)
    sessions: list[IceSession | None] = field(default_factory=list)
    relay: BuiltinRelay | None = None
    sip_ports: list[int] = field(default_factory=list)
    negotiated: Answer | None = None
    media: CallMedia | None = None
    _sip_remotes: list[tuple[str | None, int] | None] = field(default_factory=list)
    closed: bool = False

    async def prepare(self) -> bytes:
        """Gather ICE toward Lync and reserve the SIP side; returns the SIP side's offer."""
        relayed = [m for m in self.offer.media if m.media in RELAYED and not m.rejected]
        self.relay = BuiltinRelay(self.ports, self.on_timeout)
        try:
            for media in self.offer.media:
                if media in relayed:
                    session = IceSession(
                        controlling=False, components=1 if media.has("rtcp-mux") else 2,
                        address=self.address, ports=self.ports,
                        static_nat_address=self.static_nat, turn=self.turn)
                    # No MS-ICE2 hint: Lync, the controlling side, checks first, and the
                    # session answers each peer in the form it signs with.
                    self.sessions.append(session)
                    await session.gather()
                    for problem in session.stats.problems:
                        log.warning("ice_gathering_problem", media=media.media, problem=problem)
                    log.info("ice_gathered", media=media.media,
                             candidates=[f"{c.type} {c.address}:{c.port}"
                                         for c in session.local_candidates()])
                else:
                    self.sessions.append(None)
            self.sip_ports = await self.relay.reserve(self.address, len(relayed),
                                                      rtcp_mux=False)
        except BaseException:
            await self.close()
            raise
        return self._sip_offer(relayed).to_bytes()

    def _sip_offer(self, relayed: list[Media]) -> SessionDescription:
        family = "IP6" if ":" in self.address else "IP4"
        session = Section([Line("v", "0"),
                           Line("o", f"- 1 1 IN {family} {self.address}"),
                           Line("s", "lyncgate"), Line("c", f"IN {family} {self.address}"),
                           Line("t", "0 0")])
        streams = []
        for media, port in zip(relayed, self.sip_ports, strict=True):
            lines = [Line("m", f"{media.media} {port} RTP/AVP {' '.join(media.formats)}")]
            lines += [ln for ln in media.lines[1:]
                      if ln.kind == "a" and ln.attribute[0] in KEPT]
            streams.append(Media(lines))
        return SessionDescription(session, streams)

    def answer_lync(self, sip_answer: bytes) -> bytes:
        """Our answer to Lync, given the SIP side's answer; starts ICE in the background."""
        sip = parse_sdp(sip_answer)
        relayed = [i for i, s in enumerate(self.sessions) if s is not None]
        if len(sip.media) > len(relayed):
            raise SdpError(0, f"the SIP side answered {len(sip.media)} streams to "
                              f"{len(relayed)} offered")
        # Some endpoints answer fewer m= lines than offered: the missing ones are rejected.
        self._sip_remotes = []
        supported: dict[str, list[Codec]] = {}
        for position, index in enumerate(relayed):
            media = sip.media[position] if position < len(sip.media) else None
            offered = self.offer.media[index]
            if media is None or media.rejected or media.media != offered.media:
                self._sip_remotes.append(None)
                continue
            self._sip_remotes.append((sip.connection_address(media), media.port))
            maps = media.rtpmaps()
            supported.setdefault(media.media, []).extend(
                Codec(m.encoding, m.clock_rate, m.channels or 1, media.fmtp(m.payload_type) or "")
                for pt, m in maps.items() if str(pt) in media.formats)
        plans: list[MediaPlan | None] = []
        position = 0
        for session in self.sessions:
            if session is None:
                plans.append(None)
                continue
            accepted = self._sip_remotes[position] is not None
            position += 1
            if not accepted:
                plans.append(None)
                continue
            default = session.default_candidate(1)
            rtcp = None if session.components == 1 else session.default_candidate(2).port
            plans.append(MediaPlan(default.address, default.port, rtcp, session.ufrag,
                                   session.pwd, tuple(session.candidate_attributes())))
        self.negotiated = answer(self.offer, supported, plans, encryption=self.encryption,
                                 origin_address=self.static_nat or self.address)
        return self.negotiated.sdp.to_bytes()

    async def connect(self, timeout: float, media_timeout: float) -> CallMedia:
        """Run ICE toward Lync, then join each stream at the relay."""
        assert self.negotiated is not None and self.relay is not None
        plans: list[StreamPlan | None] = []
        relayed_index = 0
        for index, session in enumerate(self.sessions):
            if session is None:
                continue
            remote = self._sip_remotes[relayed_index]
            relayed_index += 1
            stream = self.negotiated.streams[index]
            if remote is None or not stream.accepted:
                plans.append(None)
                continue
            offered = self.offer.media[index]
            session_ufrag = offered.attribute("ice-ufrag") or self.offer.session.attribute(
                "ice-ufrag") or ""
            session_pwd = offered.attribute("ice-pwd") or self.offer.session.attribute(
                "ice-pwd") or ""
            candidates = ([f"candidate:{c}" for c in offered.attributes("candidate")]
                          + [f"x-candidate-ipv6:{c}"
                             for c in offered.attributes("x-candidate-ipv6")])
            await session.set_remote(session_ufrag, session_pwd, candidates)
            host, port = remote
            plans.append(StreamPlan(offered.media, session, (host or "0.0.0.0", port), None,
                                    lync_key_in=stream.remote_crypto,
                                    lync_key_out=stream.local_crypto))
        live = [p for p in plans if p is not None]
        await asyncio.gather(*(p.ice.connect(timeout) for p in live))
        if self.closed:
            raise IceError("the call ended while ICE was running")
        self.media = self.relay.connect(plans, media_timeout)
        log.info("ice_connected", streams=len(live),
                 pairs=[f"{s.local.address}:{s.local.port}->{s.remote.address}:"
                        f"{s.remote.port}" for p in live for s in p.ice.selected])
        return self.media

    async def close(self) -> None:
        self.closed = True
        if self.media is not None:
            self.media.stop()
        if self.relay is not None:
            self.relay.close()
        for session in self.sessions:
            if session is not None:
                await session.close()


__all__ = ["IceError", "LyncMedia", "wants_ice"]
