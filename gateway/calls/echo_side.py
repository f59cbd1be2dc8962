"""The media side of a call the node answers itself, the Test Call Service: the caller's
offer answered with the same codecs toward the node's ports, and every stream looped back
(`gateway.media.echo`). Plain RTP only: a Lync caller's ICE and SRTP, or any SRTP offer,
would need the node to terminate them, which the test call does not (yet) do."""

from __future__ import annotations

from gateway.calls.lync_caller import wants_ice
from gateway.calls.media_side import Body
from gateway.media.call import CallMedia
from gateway.media.echo import Echo
from gateway.sip.message import Request
from ice.ports import PortAllocator
from sdp.anchor import anchored, remote_addresses
from sdp.errors import NotAcceptable
from sdp.hold import directions, restated
from sdp.model import Line, SessionDescription
from sdp.parse import parse_sdp

SDP = "application/sdp"
# A direction answered as its mirror (RFC 3264 6.1): the echo sends what it receives.
_MIRROR = {"sendonly": "recvonly", "recvonly": "sendonly", "sendrecv": "sendrecv",
           "inactive": "inactive"}


def echo_for(request: Request, ports: PortAllocator | None, address: str,
             media_timeout: float, seen_by_caller: str) -> EchoSide:
    """The test call's media for `request`; raises NotAcceptable for what it cannot loop."""
    content_type = request.content_type
    if ports is None:
        raise NotAcceptable("the test call needs anchored media (listen.media_ports)")
    if not request.body or content_type is None or content_type.type != "application/sdp":
        raise NotAcceptable("the test call answers an SDP offer in the INVITE")
    offer = parse_sdp(request.body)
    if wants_ice(offer) or any("SAVP" in m.proto for m in offer.media):
        raise NotAcceptable("the test call loops plain RTP only (no ICE, no SRTP)")
    return EchoSide(offer, ports, address, media_timeout, seen_by_caller)


class EchoSide:
    gathers = False
    connects = False
    answers_offers_here = True
    video = ""  # nothing translated

    def __init__(self, offer: SessionDescription, ports: PortAllocator, address: str,
                 media_timeout: float, seen_by_caller: str) -> None:
        self.caller_offer = offer
        self.address = address  # where the echo's sockets are bound
        self.seen_by_caller = seen_by_caller  # what the caller's SDP names (static NAT)
        self.media_timeout = media_timeout
        self.echo = Echo(ports)
        self.ports: list[int] = []

    @property
    def relayed(self) -> CallMedia | None:
        return self.echo.media

    def reserve(self) -> None:
        self.ports = self.echo.reserve(self.address,
                                       [m.has("rtcp-mux") for m in self.caller_offer.media])

    async def prepare(self) -> None:
        return None

    def offer(self, caller: Body, toward: str) -> Body:
        return caller  # nothing is placed: the node is the callee

    def answer(self, callee: Body, *, final: bool) -> Body:
        """Our own answer to the caller (there is no callee to hear from): its codecs and
        directions mirrored, toward our ports; the loop starts with it."""
        offer = self.caller_offer
        mirrored = restated(anchored(offer, self.seen_by_caller, self.ports),
                            {kind: _MIRROR.get(way, "sendrecv")
                             for kind, way in directions(offer).items()})
        family = "IP6" if ":" in self.seen_by_caller else "IP4"
        mirrored.session.lines[:] = [
            Line("o", f"lyncgate 1 1 IN {family} {self.seen_by_caller}") if ln.kind == "o"
            else ln
            for ln in mirrored.session.lines]
        if self.echo.media is None:
            self.echo.connect([m.media for m in offer.media], remote_addresses(offer),
                              self.media_timeout)
        return mirrored.to_bytes(), SDP

    async def connect(self, timeout: float) -> None:
        return None

    def updated_offer(self) -> bytes | None:
        return None

    def relay_offer(self, *, from_caller: bool, body: bytes) -> bytes:
        raise NotAcceptable("the test call answers its offers itself")

    def relay_answer(self, *, from_caller: bool, body: bytes) -> bytes:
        return body

    def close(self) -> None:
        self.echo.close()
