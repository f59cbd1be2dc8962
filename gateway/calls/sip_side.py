"""The media of a call whose legs are both plain SIP, anchored at the relay: each stream gets
a port toward the caller and one toward the callee, and each leg's SDP is rewritten to point
at the node (`sdp.anchor`). Offers that change the session cross to the other leg rewritten
the same way, the offerer's new addresses taking effect at once (RFC 3264 8.3.1)."""

from __future__ import annotations

from gateway import logs
from gateway.calls.media_side import Body
from gateway.media.backend import SipBridge
from gateway.media.call import CallMedia
from ice.ports import PortAllocator
from sdp.anchor import anchored, remote_addresses
from sdp.errors import NotAcceptable, SdpError
from sdp.model import SessionDescription
from sdp.parse import parse_sdp

log = logs.get(__name__)
SDP = "application/sdp"


class SipSide:
    gathers = False
    connects = False
    answers_offers_here = False

    def __init__(self, offer: SessionDescription, ports: PortAllocator, address: str, *,
                 bandwidth_kbps: int, media_timeout: float, call_id: str) -> None:
        self.caller_offer = offer  # the caller's SDP, as its INVITE carried it
        self.address = address
        self.bandwidth_kbps = bandwidth_kbps
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

    def offer(self, caller: Body) -> Body:
        return self._anchored(self.caller_offer, self.toward_callee), SDP

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
            self.bridge.connect([m.media for m in offered], remote_addresses(self.caller_offer),
                                remote_addresses(answer), self.media_timeout)
        return self._anchored(answer, self.toward_caller), callee[1]

    async def connect(self, timeout: float) -> None:
        return None

    def updated_offer(self) -> bytes | None:
        return None

    def relay_offer(self, *, from_caller: bool, body: bytes) -> bytes:
        offer = parse_sdp(body)
        if len(offer.media) != len(self.toward_callee):
            raise NotAcceptable("a re-offer that adds or removes streams is not relayed")
        # The offerer's new addresses take effect now: RFC 3264 8.3.1, it must be ready to
        # receive on them; what it sends latches anyway.
        self.bridge.repoint(caller_side=from_caller, remotes=remote_addresses(offer))
        return self._anchored(offer, self.toward_callee if from_caller else self.toward_caller)

    def relay_answer(self, *, from_caller: bool, body: bytes) -> bytes:
        answer = self._readable(body)
        if answer is None:
            return body
        self.bridge.repoint(caller_side=from_caller, remotes=remote_addresses(answer))
        return self._anchored(answer, self.toward_callee if from_caller else self.toward_caller)

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

    def _anchored(self, sdp: SessionDescription, ports: list[int]) -> bytes:
        return anchored(sdp, self.address, ports, self.bandwidth_kbps).to_bytes()
