"""The media of a call whose caller speaks ICE (a Lync/SfB client, its offer usually the
RFC 5245 part of a multipart body): the gateway terminates ICE itself and anchors the media.

1. `prepare()`: an ICE session per audio/video stream (controlled: Lync offered), gathered
   side by side, ports for the SIP side, and the plain offer the SIP side gets (Lync's
   codecs and payload types, no ICE, no Microsoft attributes, the rule's bandwidth cap).
2. `answer_lync()`: with the SIP side's answer, the one application/sdp Lync gets back
   (sdp.offer_answer: common codecs, SRTP per policy, our candidates), then ICE runs.
3. When ICE selects its pairs, the relay joins each stream, renumbering payload types the
   SIP side numbered differently; Lync's second INVITE (with a=remote-candidates) is
   answered like any refresh.

`close()` may come at any point (a CANCEL during gathering): what is reserved after it is
released too, and `prepare()` raises IceError.

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
from sdp.anchor import Remote, stream_remote
from sdp.errors import SdpError
from sdp.model import Line, Media, Section, SessionDescription
from sdp.offer_answer import (
    Answer,
    Codec,
    Encryption,
    MediaPlan,
    answer,
    cap_bandwidth,
    payload_remap,
)
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
    stun: tuple[str, int] | None = None  # the rule's or location's STUN server
    bandwidth_kbps: int = 0  # the rule's cap on each stream (sdp.offer_answer.rule_cap)
    sessions: list[IceSession | None] = field(default_factory=list)
    relay: BuiltinRelay | None = None
    sip_ports: list[int] = field(default_factory=list)
    sip_offer: SessionDescription | None = None
    negotiated: Answer | None = None
    media: CallMedia | None = None
    # Per relayed stream, the SIP side's answer to it and where its media goes.
    _sip_answers: list[tuple[Media, Remote] | None] = field(default_factory=list)
    closed: bool = False

    async def prepare(self) -> bytes:
        """Gather ICE toward Lync and reserve the SIP side; returns the SIP side's offer."""
        relayed = [m for m in self.offer.media if m.media in RELAYED and not m.rejected]
        self.relay = BuiltinRelay(self.ports, self.on_timeout)
        # No MS-ICE2 hint: Lync, the controlling side, checks first, and the session answers
        # each peer in the form it signs with.
        self.sessions = [IceSession(
            controlling=False, components=1 if media.has("rtcp-mux") else 2,
            address=self.address, ports=self.ports, static_nat_address=self.static_nat,
            stun_server=self.stun, turn=self.turn) if media in relayed else None
            for media in self.offer.media]
        try:
            # Side by side: a STUN or TURN server that does not answer costs its timeout
            # once, not once per stream, before the SIP side gets its INVITE.
            await asyncio.gather(*(_gather(media.media, session) for media, session
                                   in zip(self.offer.media, self.sessions, strict=True)
                                   if session is not None))
            self.sip_ports = await self.relay.reserve(self.address, len(relayed),
                                                      rtcp_mux=False)
            if self.closed:
                raise IceError("the call ended while its media was being prepared")
        except BaseException:
            await self.close()  # again if the call closed it: this releases what came after
            raise
        self.sip_offer = self._sip_offer(relayed)
        return self.sip_offer.to_bytes()

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
            stream = Media(lines)
            cap_bandwidth(stream, self.bandwidth_kbps)
            streams.append(stream)
        return SessionDescription(session, streams)

    def answer_lync(self, sip_answer: bytes) -> bytes:
        """Our answer to Lync, given the SIP side's answer; starts ICE in the background."""
        sip = parse_sdp(sip_answer)
        relayed = [i for i, s in enumerate(self.sessions) if s is not None]
        if len(sip.media) > len(relayed):
            raise SdpError(0, f"the SIP side answered {len(sip.media)} streams to "
                              f"{len(relayed)} offered")
        # Some endpoints answer fewer m= lines than offered: the missing ones are rejected.
        self._sip_answers = []
        supported: dict[str, list[Codec]] = {}
        for position, index in enumerate(relayed):
            media = sip.media[position] if position < len(sip.media) else None
            offered = self.offer.media[index]
            remote = None if media is None else stream_remote(sip, media)
            if media is None or remote is None or media.media != offered.media:
                self._sip_answers.append(None)
                continue
            self._sip_answers.append((media, remote))
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
            accepted = self._sip_answers[position] is not None
            position += 1
            if not accepted:
                plans.append(None)
                continue
            default = session.default_candidate(1)
            rtcp = None if session.components == 1 else session.default_candidate(2).port
            plans.append(MediaPlan(default.address, default.port, rtcp, session.ufrag,
                                   session.pwd, tuple(session.candidate_attributes())))
        self.negotiated = answer(self.offer, supported, plans, encryption=self.encryption,
                                 bandwidth_kbps=self.bandwidth_kbps,
                                 origin_address=self.static_nat or self.address)
        return self.negotiated.sdp.to_bytes()

    async def connect(self, timeout: float, media_timeout: float) -> CallMedia:
        """Run ICE toward Lync, then join each stream at the relay."""
        assert self.negotiated is not None and self.relay is not None
        assert self.sip_offer is not None
        plans: list[StreamPlan | None] = []
        relayed_index = 0
        for index, session in enumerate(self.sessions):
            if session is None:
                continue
            sip_offered = self.sip_offer.media[relayed_index]
            sip_answer = self._sip_answers[relayed_index]
            relayed_index += 1
            stream = self.negotiated.streams[index]
            if sip_answer is None or not stream.accepted:
                plans.append(None)
                continue
            sip_answered, remote = sip_answer
            offered = self.offer.media[index]
            session_ufrag = offered.attribute("ice-ufrag") or self.offer.session.attribute(
                "ice-ufrag") or ""
            session_pwd = offered.attribute("ice-pwd") or self.offer.session.attribute(
                "ice-pwd") or ""
            candidates = ([f"candidate:{c}" for c in offered.attributes("candidate")]
                          + [f"x-candidate-ipv6:{c}"
                             for c in offered.attributes("x-candidate-ipv6")])
            await session.set_remote(session_ufrag, session_pwd, candidates)
            plans.append(StreamPlan(
                offered.media, session, remote.rtp, remote.rtcp,
                lync_key_in=stream.remote_crypto, lync_key_out=stream.local_crypto,
                lync_pt_map=payload_remap(offered, sip_offered, sip_answered),
                sip_pt_map=payload_remap(sip_answered, self.negotiated.sdp.media[index],
                                         offered)))
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
        await asyncio.gather(*(s.close() for s in self.sessions if s is not None))


async def _gather(media: str, session: IceSession) -> None:
    await session.gather()
    for problem in session.stats.problems:
        log.warning("ice_gathering_problem", media=media, problem=problem)
    log.info("ice_gathered", media=media,
             candidates=[f"{c.type} {c.address}:{c.port}" for c in session.local_candidates()])


__all__ = ["IceError", "LyncMedia", "wants_ice"]
