"""The media of a call whose legs are both plain SIP, anchored at the relay: each stream gets
a port toward the caller and one toward the callee, and each leg's SDP is rewritten to point
at the node (`sdp.anchor`). Offers that change the session cross to the other leg rewritten
the same way, the offerer's new addresses taking effect at once (RFC 3264 8.3.1). Streams
beyond the rule's call capability are rejected (port 0) in every offer and answer either
leg gets, so neither can escalate past it with a re-offer."""

from __future__ import annotations

from gateway import logs
from gateway.calls.media_side import Body
from gateway.media.backend import SipBridge
from gateway.media.call import CallMedia
from ice.ports import PortAllocator
from sdp.anchor import Remote, anchored, remote_addresses
from sdp.capability import UNLIMITED, Capability, beyond, require_some, within
from sdp.errors import NotAcceptable, SdpError
from sdp.model import SessionDescription
from sdp.parse import parse_sdp

log = logs.get(__name__)
SDP = "application/sdp"


class SipSide:
    gathers = False
    connects = False
    answers_offers_here = False
    video = ""  # both legs SIP: video, if any, relayed untranslated

    def __init__(self, offer: SessionDescription, ports: PortAllocator, address: str, *,
                 bandwidth_kbps: int, media_timeout: float, call_id: str,
                 capability: Capability = UNLIMITED, seen_by_caller: str = "") -> None:
        self.caller_offer = offer  # the caller's SDP, as its INVITE carried it
        self.address = address  # where the relay's sockets are bound
        # The node's address as each leg reaches it, written in that leg's SDP (static NAT).
        self.seen_by = {True: seen_by_caller or address, False: address}
        self.bandwidth_kbps = bandwidth_kbps
        self.capability = capability
        # Per m= line, why the offer last carried across refuses it ('': relayed); its
        # answer rejects the same streams, whatever the answerer wrote (RFC 3264 6).
        self.refused = beyond(offer, capability)
        require_some(offer, self.refused)
        self.media_timeout = media_timeout
        self.call_id = call_id
        self.bridge = SipBridge(ports)
        self.toward_caller: list[int] = []  # relay ports in our answer to the caller
        self.toward_callee: list[int] = []  # relay ports in our offer to the callee

    @property
    def relayed(self) -> CallMedia | None:
        return self.bridge.media

    def reserve(self) -> None:
        self.toward_caller, self.toward_callee = self.bridge.reserve(
            self.address, [m.has("rtcp-mux") for m in self.caller_offer.media])

    async def prepare(self) -> None:
        return None

    def offer(self, caller: Body, toward: str) -> Body:
        self.seen_by[False] = toward
        return self._anchored(self.caller_offer, self.refused, to_caller=False), SDP

    def answer(self, callee: Body, *, final: bool) -> Body:
        """The callee's SDP pointed at the relay, which starts relaying on the first answer
        (a provisional's early media included). An answer that cannot be anchored passes
        as it is, logged."""
        answer = self._readable(callee[0])
        if answer is None:
            return callee
        offered = self.caller_offer.media
        if len(answer.media) != len(offered):
            log.warning("answer_sdp_mismatch", call_id=self.call_id, offered=len(offered),
                        answered=len(answer.media))
            return callee
        if self.bridge.media is None:
            self.bridge.connect([m.media for m in offered], self._remotes(self.caller_offer),
                                self._remotes(answer), self.media_timeout)
        return self._anchored(answer, self.refused, to_caller=True), callee[1]

    async def connect(self, timeout: float) -> None:
        return None

    def updated_offer(self) -> bytes | None:
        return None

    def relay_offer(self, *, from_caller: bool, body: bytes) -> bytes:
        offer = parse_sdp(body)
        if len(offer.media) != len(self.toward_callee):
            raise NotAcceptable("a re-offer that adds or removes streams is not relayed")
        refused = beyond(offer, self.capability)
        require_some(offer, refused)
        self.refused = refused
        # The offerer's new addresses take effect now: RFC 3264 8.3.1, it must be ready to
        # receive on them; what it sends latches anyway.
        self.bridge.repoint(caller_side=from_caller, remotes=self._remotes(offer))
        return self._anchored(offer, refused, to_caller=not from_caller)

    def relay_answer(self, *, from_caller: bool, body: bytes) -> bytes:
        answer = self._readable(body)
        if answer is None:
            return body
        self.bridge.repoint(caller_side=from_caller, remotes=self._remotes(answer))
        return self._anchored(answer, self.refused, to_caller=not from_caller)

    def close(self) -> None:
        self.bridge.close()

    def _readable(self, body: bytes) -> SessionDescription | None:
        """An answer's SDP, or None when there is none or it cannot be read (logged): such
        an answer passes as it is, and the endpoints may still reach each other."""
        if not body:
            return None
        try:
            return parse_sdp(body)
        except SdpError as exc:
            log.warning("answer_sdp_unreadable", call_id=self.call_id, error=str(exc))
            return None

    def _remotes(self, sdp: SessionDescription) -> list[Remote | None]:
        """Where each stream goes, None for one the capability refuses: nothing is sent
        there, whatever an endpoint that ignores port 0 sends us."""
        return [None if reason else remote for remote, reason
                in zip(remote_addresses(sdp), self.refused, strict=False)]

    def _anchored(self, sdp: SessionDescription, refused: list[str], *, to_caller: bool) -> bytes:
        """`sdp` as the leg it goes to gets it: that leg's relay ports, the node's address as
        that leg reaches it."""
        ports = self.toward_caller if to_caller else self.toward_callee
        return within(anchored(sdp, self.seen_by[to_caller], ports, self.bandwidth_kbps),
                      refused).to_bytes()
