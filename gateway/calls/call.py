"""A call and its two legs: the records every part of call control reads and writes.

A `Call` holds the `caller` leg (the INVITE that arrived) and the `callee` leg (the INVITE
the gateway placed), each a `Leg` with its dialog, peer, session timer and the session
descriptions that crossed it; code that acts on "this leg and the other" is written once,
with `Call.other(leg)`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.calls.cdr import CallRecord
from gateway.calls.media_side import MediaSide
from gateway.calls.settings import CallSettings

if TYPE_CHECKING:
    from gateway.calls.meeting import Meeting
    from gateway.calls.reception import Reception
from gateway.resolver.rfc3263 import Target
from gateway.sip.dialog import Dialog
from gateway.sip.message import Request, Response
from gateway.sip.session_timer import LegTimer, UasTimer
from gateway.sip.transaction_machines import ClientTransaction, ServerTransaction
from gateway.transport.peer import Peer
from routing.engine import Decision
from sdp.hold import Directions


class Role(enum.StrEnum):
    """Which leg: its value is how logs and the status API name it (`leg=in`)."""

    CALLER = "in"  # the leg the call arrived on
    CALLEE = "out"  # the leg the gateway placed

    @property
    def party(self) -> str:
        """The party at the far end of this leg, in words for reasons and CDRs."""
        return "caller" if self is Role.CALLER else "callee"


class CallState(enum.Enum):
    RESOLVING = "resolving"
    CALLING = "calling"
    EARLY = "early"
    CONNECTED = "connected"
    ENDED = "ended"


@dataclass(eq=False, slots=True)
class Leg:
    role: Role
    peer: Peer | None = None  # where its requests go (the caller's: where its INVITE came from)
    dialog: Dialog | None = None  # once the call is answered
    timer: LegTimer | None = None  # its session timer (RFC 4028), when one was agreed
    sdp_to: bytes = b""  # the session description this leg last got from us
    sdp_from: bytes = b""  # ... and last sent us
    # The directions this leg last offered, where its Lync side ends here (hold, resume).
    directions: Directions | None = None
    allows_update: bool = False  # its INVITE or 2xx listed UPDATE: refreshes need no offer


@dataclass(eq=False, slots=True)
class Outbound:
    """The INVITE the gateway places on the callee leg, and where it may go."""

    targets: list[Target] = field(default_factory=list)  # in RFC 3263 failover order
    invite: Request | None = None
    txn: ClientTransaction | None = None
    answer: Response | None = None  # the callee's 2xx
    interval: int = 0  # the Session-Expires our INVITE asks the callee for
    single_part: bytes = b""  # the callee refused multipart: the SDP part it gets instead
    heard: bool = False  # a provisional came back: a CANCEL may be sent (RFC 3261 9.1)
    cancel_sent: bool = False


@dataclass(eq=False, slots=True, weakref_slot=True)  # weakly referable: tests check it is freed
class Call:
    id: int
    inbound: Request
    in_txn: ServerTransaction
    in_tag: str
    decision: Decision
    settings: CallSettings  # the config generation the call was admitted under
    target_uri: str
    media: MediaSide
    caller: Leg
    callee: Leg
    record: CallRecord
    in_session: UasTimer | None = None  # the caller's leg timer as our 2xx will state it
    out: Outbound = field(default_factory=Outbound)
    state: CallState = CallState.RESOLVING
    provisional_sent: bool = False
    cancelled: bool = False
    local: bool = False  # answered by the node itself (the Test Call Service): no callee leg
    pending: InDialogRequest | None = None  # a session change in flight to the other leg
    reception: Reception | None = None  # prompts and digits, on a call the node took
    # The reception's own media while the callee leg it placed for its answered caller is
    # set up (`reception_leg`): that leg's outcome goes back to the reception.
    parked: MediaSide | None = None
    # A Lync meeting joined by Conference ID: its focus, lobby and MCU (the callee leg).
    meeting: Meeting | None = None

    def other(self, leg: Leg) -> Leg:
        return self.callee if leg is self.caller else self.caller

    def leg(self, role: Role) -> Leg:
        return self.caller if role is Role.CALLER else self.callee

    @property
    def answered(self) -> bool:
        """Whether the caller has had its final response."""
        last = self.in_txn.last_response
        return last is not None and last.status >= 200

    @property
    def connected(self) -> bool:
        return self.state is CallState.CONNECTED

    @property
    def handing_on(self) -> bool:
        """A callee leg is being placed for a caller the node answered itself."""
        return self.parked is not None


class Purpose(enum.Enum):
    """Why the gateway sent a request inside a call."""

    REMOTE_CANDIDATES = "remote-candidates"  # the second offer toward Lync (RFC 5245 9.1.2.2)
    REFER = "refer"  # the reception hands the caller on (RFC 3515)
    HAND_ON = "hand-on"  # the caller's media moved to the leg the reception placed for it
    REFRESH = "refresh"  # a session refresh of ours (RFC 4028)
    RELAY = "relay"  # the other leg's offer, carried across
    DIRECTIONS = "directions"  # a hold, resume or stream removed, where a Lync side ends here
    ADD = "add"  # streams a leg's re-offer adds (video), taken up where a Lync side ends here


@dataclass(eq=False, slots=True)
class InDialogRequest:
    """Marks the client transaction of a request of ours inside a call. A session change
    relayed from the other leg keeps that leg's server transaction (`origin`), which waits
    for our answer."""

    call: Call
    leg: Leg  # the leg the request went out on
    purpose: Purpose
    origin: ServerTransaction | None = None
    origin_request: Request | None = None
    session: UasTimer | None = None  # the originating leg's timer for our answer to it
    sent_body: bytes = b""
    directions: Directions = field(default_factory=dict)  # a hold or resume: as offered
    dropped: frozenset[str] = frozenset()  # kinds of stream the offer removes (video)
