"""The media of a call placed toward Lync (a rule whose outgoing protocol is MS-SIP): the
gateway is the ICE offerer and controlling agent toward the Lync client.

1. `offer()`: an ICE session per audio/video stream of the SIP caller's offer (gathered side
   by side), the relay's ports toward the caller, and the offer Lync gets: the caller's
   codecs and payload types, SRTP per policy (a fresh key), our candidates, rtcp-mux, the
   rule's bandwidth cap.
2. `answer_caller()`: with Lync's answer, the plain-RTP answer the SIP caller gets (Lync's
   codecs, the relay's ports), and the remote ICE data.
3. `connect()`: ICE checks; when pairs are selected the relay joins each stream, and
   `updated_offer()` gives the second offer (a=remote-candidates) the controlling agent
   sends (RFC 5245 9.1.2.2), which Lync expects before it considers the call set up.

`close()` may come at any point (a CANCEL during gathering): what is reserved after it is
released too, and `offer()` raises IceError.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway import logs
from gateway.media.backend import BuiltinRelay, StreamPlan
from gateway.media.call import CallMedia
from ice.errors import IceError
from ice.ports import PortAllocator
from ice.session import IceSession, TurnSettings
from sdp.anchor import stream_remote
from sdp.attributes import Crypto, MediaBandwidth
from sdp.errors import NotAcceptable
from sdp.model import Line, Media, Section, SessionDescription
from sdp.offer_answer import Encryption, cap_bandwidth, payload_remap
from sdp.parse import parse_sdp

log = logs.get(__name__)
RELAYED = ("audio", "video")
KEPT = ("rtpmap", "fmtp", "ptime")
SUITE = "AES_CM_128_HMAC_SHA1_80"


@dataclass
class LyncCallee:
    caller_offer: SessionDescription  # the SIP caller's SDP
    ports: PortAllocator
    address: str
    static_nat: str
    encryption: Encryption
    on_timeout: Callable[[str], None]
    turn: TurnSettings | None = None
    stun: tuple[str, int] | None = None
    bandwidth_kbps: int = 0  # the rule's cap on each stream (sdp.offer_answer.rule_cap)
    sessions: list[IceSession | None] = field(default_factory=list)
    keys: list[Crypto | None] = field(default_factory=list)  # ours toward Lync, per stream
    relay: BuiltinRelay | None = None
    caller_ports: list[int] = field(default_factory=list)
    lync_offer: SessionDescription | None = None  # what offer() gave Lync
    lync_answer: SessionDescription | None = None
    caller_answer: SessionDescription | None = None  # what answer_caller() gave the caller
    media: CallMedia | None = None
    version: int = 1
    closed: bool = False

    async def offer(self) -> bytes:
        relayed = [m for m in self.caller_offer.media if m.media in RELAYED and not m.rejected]
        self.relay = BuiltinRelay(self.ports, self.on_timeout)
        # No MS-ICE2 hint: a client that speaks RFC 5389 must not get MS-ICE2 signatures; an
        # MS-ICE2 one is recognised by its own first check and our checks in flight are
        # resent in its form at once.
        self.sessions = [IceSession(
            controlling=True, components=1, address=self.address, ports=self.ports,
            static_nat_address=self.static_nat, stun_server=self.stun, turn=self.turn)
            if media in relayed else None for media in self.caller_offer.media]
        self.keys = [None if session is None or self.encryption == "off" else Crypto(
            1, SUITE, f"inline:{base64.b64encode(os.urandom(30)).decode()}|2^31")
            for session in self.sessions]
        try:
            # Side by side: a STUN or TURN server that does not answer costs its timeout
            # once, not once per stream, before Lync gets its INVITE.
            await asyncio.gather(*(s.gather() for s in self.sessions if s is not None))
            self.caller_ports = await self.relay.reserve(self.address, len(relayed),
                                                         rtcp_mux=False)
            if self.closed:
                raise IceError("the call ended while its media was being prepared")
        except BaseException:
            await self.close()  # again if the call closed it: this releases what came after
            raise
        self.lync_offer = self._lync_offer(remote_candidates=False)
        return self.lync_offer.to_bytes()

    def _lync_offer(self, *, remote_candidates: bool) -> SessionDescription:
        origin = self.static_nat or self.address
        family = "IP6" if ":" in origin else "IP4"
        session = Section([Line("v", "0"),
                           Line("o", f"- 1 {self.version} IN {family} {origin}"),
                           Line("s", "session"), Line("c", f"IN {family} {origin}"),
                           Line("t", "0 0")])
        streams = []
        for media, ice, key in zip(self.caller_offer.media, self.sessions, self.keys,
                                   strict=True):
            if ice is None:
                streams.append(Media([Line("m", f"{media.media} 0 {media.proto} "
                                                f"{media.formats[0]}")]))
                continue
            default = ice.default_candidate(1)
            proto = "RTP/AVP" if key is None else "RTP/SAVP"
            body = Media([Line("m", f"{media.media} {default.port} {proto} "
                                    + " ".join(media.formats))])
            body.add_attribute("ice-ufrag", ice.ufrag)
            body.add_attribute("ice-pwd", ice.pwd)
            for attribute in ice.candidate_attributes():
                name, _, value = attribute.partition(":")
                body.add_attribute(name, value)
            if remote_candidates and ice.selected:
                body.add_attribute(*ice.remote_candidates_attribute().split(":", 1))
            if key is not None:
                body.add_attribute("crypto", str(key))
            body.add_attribute("rtcp-mux")
            body.add_attribute("label", f"main-{media.media}")
            for line in media.lines[1:]:
                if line.kind == "a" and line.attribute[0] in KEPT:
                    body.lines.append(Line("a", line.value))
            body.add_attribute("sendrecv")
            if self.bandwidth_kbps:  # Lync reads its own attribute, not b=
                body.add_attribute("x-mediabw", str(MediaBandwidth(
                    f"main-{media.media}", self.bandwidth_kbps, self.bandwidth_kbps)))
                cap_bandwidth(body, self.bandwidth_kbps)
            streams.append(body)
        return SessionDescription(session, streams)

    def answer_caller(self, lync_answer: bytes) -> bytes:
        """The SIP caller's answer, from Lync's: Lync's codecs, the relay's ports, plain RTP."""
        answer = parse_sdp(lync_answer)
        if len(answer.media) != len(self.caller_offer.media):
            raise NotAcceptable(f"Lync answered {len(answer.media)} streams to "
                                f"{len(self.caller_offer.media)} offered")
        self.lync_answer = answer
        family = "IP6" if ":" in self.address else "IP4"
        session = Section([Line("v", "0"), Line("o", f"- 1 1 IN {family} {self.address}"),
                           Line("s", "lyncgate"), Line("c", f"IN {family} {self.address}"),
                           Line("t", "0 0")])
        streams = []
        relayed = 0
        for offered, answered, ice in zip(self.caller_offer.media, answer.media,
                                          self.sessions, strict=True):
            if ice is None:
                streams.append(Media([Line("m", f"{offered.media} 0 {offered.proto} "
                                                f"{offered.formats[0]}")]))
                continue
            port = self.caller_ports[relayed]
            relayed += 1
            if answered.rejected:
                streams.append(Media([Line("m", f"{offered.media} 0 {offered.proto} "
                                                f"{offered.formats[0]}")]))
                continue
            body = Media([Line("m", f"{offered.media} {port} {offered.proto} "
                                    + " ".join(answered.formats))])
            for line in answered.lines[1:]:
                if line.kind == "a" and line.attribute[0] in KEPT:
                    body.lines.append(Line("a", line.value))
            body.add_attribute("sendrecv")
            cap_bandwidth(body, self.bandwidth_kbps)
            streams.append(body)
        self.caller_answer = SessionDescription(session, streams)
        return self.caller_answer.to_bytes()

    async def connect(self, timeout: float, media_timeout: float) -> CallMedia:
        assert self.lync_offer is not None and self.lync_answer is not None
        assert self.caller_answer is not None and self.relay is not None
        plans: list[StreamPlan | None] = []
        for offered, answered, ice, key, to_lync, to_caller in zip(
                self.caller_offer.media, self.lync_answer.media, self.sessions, self.keys,
                self.lync_offer.media, self.caller_answer.media, strict=True):
            if ice is None:
                continue
            remote = stream_remote(self.caller_offer, offered)
            if answered.rejected or remote is None:
                plans.append(None)
                continue
            ufrag = answered.attribute("ice-ufrag") or self.lync_answer.session.attribute(
                "ice-ufrag") or ""
            pwd = answered.attribute("ice-pwd") or self.lync_answer.session.attribute(
                "ice-pwd") or ""
            await ice.set_remote(ufrag, pwd, [f"candidate:{c}" for c in
                                              answered.attributes("candidate")]
                                 + [f"x-candidate-ipv6:{c}"
                                    for c in answered.attributes("x-candidate-ipv6")])
            cryptos = answered.cryptos()
            if key is not None and not cryptos:
                raise IceError("Lync answered without a=crypto to our SRTP offer")
            plans.append(StreamPlan(
                offered.media, ice, remote.rtp, remote.rtcp,
                lync_key_in=cryptos[0] if cryptos else None, lync_key_out=key,
                lync_pt_map=payload_remap(answered, to_caller, offered),
                sip_pt_map=payload_remap(offered, to_lync, answered)))
        live = [p for p in plans if p is not None]
        await asyncio.gather(*(p.ice.connect(timeout) for p in live))
        if self.closed:
            raise IceError("the call ended while ICE was running")
        self.media = self.relay.connect(plans, media_timeout)
        log.info("ice_connected", streams=len(live), role="controlling")
        return self.media

    def updated_offer(self) -> bytes:
        """The controlling agent's second offer: the same session with a=remote-candidates
        naming the selected pairs (RFC 5245 9.1.2.2)."""
        self.version += 1
        return self._lync_offer(remote_candidates=True).to_bytes()

    async def close(self) -> None:
        self.closed = True
        if self.media is not None:
            self.media.stop()
        if self.relay is not None:
            self.relay.close()
        await asyncio.gather(*(s.close() for s in self.sessions if s is not None))
