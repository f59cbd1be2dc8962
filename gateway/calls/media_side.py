"""The one interface call control drives a call's media through, whatever anchors it.

Implemented by `PassThrough` (signalling only: SDP crosses as it is), `SipSide` (both legs
plain SIP, anchored at the relay), `LyncCaller` (the caller speaks ICE; the gateway answers
it) and `LyncCallee` (the callee is Lync; the gateway offers ICE to it). Call control asks
what a side can do (`gathers`, `connects`, `answers_offers_here`), never which kind it is;
the asyncio adapter runs the waits (`prepare`, `connect`) and `close`'s remainder.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, Protocol, runtime_checkable

from gateway.media.call import CallMedia
from sdp.model import SessionDescription

Body = tuple[bytes, str | None]  # a message body and its Content-Type


class MediaSide(Protocol):
    @property
    def gathers(self) -> bool:
        """Whether `prepare` must be awaited before the callee's offer (ICE gathering)."""
        ...

    @property
    def connects(self) -> bool:
        """Whether `connect` must be awaited after the answer (ICE checks) for media."""
        ...

    @property
    def answers_offers_here(self) -> bool:
        """Whether a leg's ICE ends here: its offers are answered here, and only a change of
        direction (hold, resume) crosses to the other leg."""
        ...

    @property
    def relayed(self) -> CallMedia | None:
        """The streams being relayed, once media flows through the node."""
        ...

    @property
    def video(self) -> str:
        """The CDR's word on video translated between Lync and SIP ("up WxH", "refused:
        <why>", "none"); '' where this side translates none (the column stays empty)."""
        ...

    def reserve(self) -> None:
        """Take what the offer needs at once (relay ports); raises PortsExhausted."""

    async def prepare(self) -> None:
        """Gather toward Lync and take the relay's ports; raises IceError."""

    def offer(self, caller: Body, toward: str) -> Body:
        """What the callee is offered, from the caller's INVITE body; `toward`: the node's
        address as the callee reaches it (static NAT)."""
        ...

    def answer(self, callee: Body, *, final: bool) -> Body:
        """What the caller gets from the callee's answer (a 2xx, or a provisional when not
        `final`); raises SdpError when a final answer cannot be used."""
        ...

    async def connect(self, timeout: float) -> None:
        """Run ICE and start relaying; raises IceError."""

    def updated_offer(self) -> bytes | None:
        """After `connect`, a second offer the callee leg needs (RFC 5245 9.1.2.2), if any."""
        ...

    def relay_offer(self, *, from_caller: bool, body: bytes) -> bytes:
        """A leg's new offer as the other leg gets it; raises SdpError when it cannot be
        carried (488)."""
        ...

    def relay_answer(self, *, from_caller: bool, body: bytes) -> bytes:
        """The answer to a carried offer, as the offering leg gets it (`from_caller`: who
        answered)."""
        ...

    def close(self) -> Coroutine[Any, Any, None] | None:
        """Stop media and free what is held now; returns what is left to await, if any."""
        ...


@runtime_checkable
class StopsStreams(Protocol):
    """A side that can stop some of its streams mid-call (a re-offer removed video) while
    the others go on; call control asks `isinstance(side, StopsStreams)`."""

    def stop_streams(self, kinds: frozenset[str], why: str) -> Coroutine[Any, Any, None] | None:
        """Stop relaying the streams of `kinds` (`why`: for the CDR); returns what is left
        to await, if anything."""
        ...


@runtime_checkable
class AddsStreams(Protocol):
    """A side that can take up streams a leg's re-offer adds mid-call (video added to an
    audio call): prepared (ICE gathered, relay ports), offered to the other leg, answered
    back with what it took, then connected; call control asks `isinstance(side,
    AddsStreams)` and declines the added streams where it is not."""

    def begin_adding(self, *, from_caller: bool, offer: SessionDescription) -> bool:
        """Whether `offer` (from the caller's leg or the callee's) adds streams this side
        takes up, or offers one again on the m= line where it was removed or rejected (RFC
        3264 8.1); if so, the side keeps it for the steps below. Called with every offer
        of a leg, so that a line it rejected is known as such."""
        ...

    async def prepare_added(self) -> None:
        """Gather toward Lync and take relay ports for the added streams; raises IceError
        (the side has then let them go again)."""

    def added_offer(self, last: bytes) -> bytes:
        """The other leg's re-offer: `last` (the description it last had from us) with the
        added streams, next o= version."""
        ...

    def added_answer(self, reply: bytes, last: bytes) -> tuple[bytes, bool]:
        """From the other leg's answer (`reply`), ours to the offering leg (`last`, what it last had
        from us, with the added streams answered, next o= version), and whether any was
        taken; raises SdpError when the answer cannot be read."""
        ...

    async def connect_added(self, timeout: float) -> None:
        """Run ICE for the added streams both legs took and join them to the relay; let go
        of the others (and of all on failure, raising IceError). Due whenever the streams
        were prepared, taken or not."""


@runtime_checkable
class FollowsBandwidth(Protocol):
    """A side that carries Lync's video bandwidth to the SIP side: a Lync re-offer stating
    another receive bandwidth (`a=x-mediabw:main-video`) re-offers the SIP side `b=AS`,
    which is the one way to ask a SIP endpoint that takes no TMMBR to send less."""

    def sip_video_kbps(self, *, from_caller: bool, offer: SessionDescription) -> int | None:
        """The b=AS the SIP side's video should have after this re-offer of the caller's
        leg (`from_caller`) or the callee's; None when the offer is not Lync's or states
        no video bandwidth."""
        ...


class PassThrough:
    """Signalling only: SIP endpoints send their media to each other, and SDP crosses the
    gateway unread, as through a proxy."""

    gathers = False
    connects = False
    answers_offers_here = False
    relayed = None
    video = ""

    def reserve(self) -> None:
        return None

    async def prepare(self) -> None:
        return None

    def offer(self, caller: Body, toward: str) -> Body:
        return caller

    def answer(self, callee: Body, *, final: bool) -> Body:
        return callee

    async def connect(self, timeout: float) -> None:
        return None

    def updated_offer(self) -> bytes | None:
        return None

    def relay_offer(self, *, from_caller: bool, body: bytes) -> bytes:
        return body

    def relay_answer(self, *, from_caller: bool, body: bytes) -> bytes:
        return body

    def close(self) -> None:
        return None
