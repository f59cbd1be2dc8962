"""The media of a call whose caller speaks ICE (a Lync/SfB client, its offer usually the
RFC 5245 part of a multipart body): the gateway terminates ICE itself (controlled: Lync
offered) and anchors the media.

1. `prepare()`: ICE gathered per audio/video stream, ports for the SIP side, and the plain
   offer the SIP side gets (Lync's codecs and payload types, no ICE, no Microsoft
   attributes, the rule's bandwidth cap).
2. `answer()`: with the SIP side's answer, the one application/sdp Lync gets back
   (sdp.offer_answer: common codecs, SRTP per policy, our candidates).
3. `connect()`: ICE checks; when pairs are selected the relay joins each stream, renumbering
   payload types the SIP side numbered differently. Lync's second INVITE (with
   a=remote-candidates) is answered like any refresh.

Streams Lync offers that the SIP side cannot carry (application sharing over TCP) are
rejected in the answer with port 0.
"""

from __future__ import annotations

from gateway.calls.ice_side import RELAYED, IceSide, set_remote
from gateway.calls.media_side import Body
from gateway.media.backend import StreamPlan
from ice.errors import IceError
from sdp.anchor import Remote, stream_remote
from sdp.errors import NotAcceptable
from sdp.model import Line, Media, Section, SessionDescription
from sdp.offer_answer import (
    Answer,
    Codec,
    MediaPlan,
    answer,
    cap_bandwidth,
    payload_remap,
)
from sdp.parse import parse_sdp

# Lync's offer lines the SIP side gets unchanged (codecs and direction).
KEPT = ("rtpmap", "fmtp", "sendrecv", "sendonly", "recvonly", "inactive", "ptime")
SDP = "application/sdp"


def wants_ice(offer: SessionDescription) -> bool:
    return any(m.has("ice-ufrag") for m in offer.media) or offer.session.has("ice-ufrag")


class LyncCaller(IceSide):
    """`streams` is Lync's offer (the RFC 5245 part)."""

    controlling = False  # Lync offered
    sip_offer: SessionDescription | None = None
    negotiated: Answer | None = None
    # Per relayed stream, the SIP side's answer to it and where its media goes.
    _sip_answers: list[tuple[Media, Remote] | None]

    def _components(self, media: Media) -> int:
        return 1 if media.has("rtcp-mux") else 2

    def offer(self, caller: Body) -> Body:
        """The SIP side's offer (once prepared): Lync's codecs toward the relay's ports."""
        relayed = [m for m in self.streams.media if m.media in RELAYED and not m.rejected]
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
        self.sip_offer = SessionDescription(session, streams)
        return self.sip_offer.to_bytes(), SDP

    def answer(self, callee: Body, *, final: bool) -> Body:
        """Our answer to Lync, given the SIP side's answer: Lync gets our own SDP with the
        2xx, never the SIP side's (nor a provisional's early media)."""
        if not final:
            return b"", None
        sip = parse_sdp(callee[0])
        relayed = [i for i, s in enumerate(self.sessions) if s is not None]
        if len(sip.media) > len(relayed):
            raise NotAcceptable(f"the SIP side answered {len(sip.media)} streams to "
                                f"{len(relayed)} offered")
        # Some endpoints answer fewer m= lines than offered: the missing ones are rejected.
        self._sip_answers = []
        supported: dict[str, list[Codec]] = {}
        for position, index in enumerate(relayed):
            media = sip.media[position] if position < len(sip.media) else None
            offered = self.streams.media[index]
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
        self.negotiated = answer(self.streams, supported, plans,
                                 encryption=self.encryption, bandwidth_kbps=self.bandwidth_kbps,
                                 origin_address=self.static_nat or self.address)
        return self.negotiated.sdp.to_bytes(), SDP

    async def connect(self, timeout: float) -> None:
        """Run ICE toward Lync, then join each stream at the relay."""
        if self.negotiated is None or self.sip_offer is None:
            raise IceError("no answer was negotiated")
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
            offered = self.streams.media[index]
            await set_remote(session, self.streams, offered)
            plans.append(StreamPlan(
                offered.media, session, remote.rtp, remote.rtcp,
                lync_key_in=stream.remote_crypto, lync_key_out=stream.local_crypto,
                lync_pt_map=payload_remap(offered, sip_offered, sip_answered),
                sip_pt_map=payload_remap(sip_answered, self.negotiated.sdp.media[index],
                                         offered)))
        await self._run(plans, timeout)

    def updated_offer(self) -> bytes | None:
        return None  # Lync, the controlling agent, sends the second offer itself

    def relay_offer(self, *, from_caller: bool, body: bytes) -> bytes:
        raise NotAcceptable("offers are answered where ICE ends")

    def relay_answer(self, *, from_caller: bool, body: bytes) -> bytes:
        return body
