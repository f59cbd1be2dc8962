"""The four transaction state machines of RFC 3261 section 17, as amended by RFC 6026.

Each machine is pure: it takes messages and `now`, keeps named timers as deadlines, and
returns what to send and what to tell the transaction user (TU). `gateway.sip.transaction_layer`
owns matching and the timer heap.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.frozen import frozen
from gateway.sip.message import Request, Response
from gateway.sip.timers import Timers
from gateway.transport.peer import Peer

# Timers D, I, J, K, L and M only keep a finished transaction around to absorb
# retransmissions (or, for L and M, to let late 2xx through): ending one a little late
# changes nothing on the wire. Their deadlines share a 100 ms grid, so a node's clean-ups
# take ten wake-ups a second instead of one per 10 ms timer tick (each wake-up of an
# otherwise idle node costs far more than the clean-up itself), in batches small enough
# not to hold up the messages behind them (a one-second grid did: the p99 of anchored call
# set-up at 200 calls/s went from +3 ms to +6 ms).
# RFC 3261's timer letters, and "transport" for a request the transport could not deliver
# (RFC 3261 8.1.3.1): the one spelling of timer names, in events, logs and metrics labels.
TimerName = Literal["A", "B", "D", "E", "F", "G", "H", "I", "J", "K", "L", "M", "transport"]
LINGER_TIMERS: frozenset[TimerName] = frozenset(("D", "I", "J", "K", "L", "M"))
LINGER_GRID_S = 0.1


class State(enum.Enum):
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    ACCEPTED = "Accepted"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    TERMINATED = "Terminated"


# -- what a machine returns ---------------------------------------------------------------
@frozen
class Send:
    data: bytes
    peer: Peer
    # What the bytes are, when the sender still holds it parsed (a settled transaction
    # keeps only the bytes).
    message: Request | Response | None = None


@frozen
class ToTU:
    """A message for the transaction user (a response, or an ACK for a 2xx)."""

    message: Request | Response


@frozen
class TimedOut:
    """Timer B, F or H fired: the TU treats it as a 408 (client) or a missing ACK (server)."""

    timer: TimerName


Action = Send | ToTU | TimedOut


@dataclass(eq=False, slots=True)
class Transaction:
    key: tuple[Any, ...]
    # The request that started the transaction, until the transaction settles.
    origin: Request | None
    peer: Peer
    timers: Timers
    state: State
    # name -> absolute deadline; the layer's heap holds the same entries.
    deadlines: dict[TimerName, float] = field(default_factory=dict)
    # Timers armed since the layer last looked, for its heap: a timer left running is
    # already there.
    armed: list[tuple[float, TimerName]] = field(default_factory=list)
    # Retransmission interval of timers A, E and G.
    interval: float = 0.0
    tu_data: Any = None  # whatever the TU hangs on the transaction (a call leg, a callback)
    # Only retransmissions are absorbed from here on (Timers D, I, J, K): the layer lets
    # go of `tu_data` once the TU has seen the last event.
    settled: bool = False
    method: str = field(init=False)

    def __post_init__(self) -> None:
        assert self.origin is not None
        self.method = self.origin.method

    @property
    def request(self) -> Request:
        assert self.origin is not None, "a settled transaction keeps no request"
        return self.origin

    @property
    def is_invite(self) -> bool:
        return self.method == "INVITE"

    def _settle(self) -> None:
        """A transaction waiting out Timer D/I/J/K (32 s over UDP) needs its key and the
        bytes that answer retransmissions; dropping the parsed messages keeps the tens of
        thousands a busy node holds to a few small objects each, so garbage collections
        stay short."""
        self.origin = None
        self.settled = True

    @property
    def terminated(self) -> bool:
        return self.state is State.TERMINATED

    def _arm(self, name: TimerName, now: float, delay: float) -> None:
        deadline = now + delay
        if name in LINGER_TIMERS:
            deadline = math.ceil(deadline / LINGER_GRID_S) * LINGER_GRID_S
        self.deadlines[name] = deadline
        self.armed.append((deadline, name))

    def _terminate(self) -> None:
        self.state = State.TERMINATED
        self.deadlines.clear()

    def next_deadline(self) -> float | None:
        return min(self.deadlines.values(), default=None)


@dataclass(eq=False, slots=True)
class ClientTransaction(Transaction):
    """INVITE (Calling/Proceeding/Accepted/Completed) and non-INVITE (Trying/Proceeding/
    Completed) client transactions."""

    data: bytes = b""
    ack: bytes | None = None

    def start(self, now: float) -> list[Action]:
        self.data = self.request.to_bytes()
        self.interval = self.timers.t1
        if self.is_invite:
            self.state = State.CALLING
            self._arm("B", now, self.timers.b)
            if not self.peer.reliable:
                self._arm("A", now, self.interval)
        else:
            self.state = State.TRYING
            self._arm("F", now, self.timers.f)
            if not self.peer.reliable:
                self._arm("E", now, self.interval)
        return [Send(self.data, self.peer, self.request)]

    def receive(self, response: Response, now: float) -> list[Action]:
        if self.is_invite:
            return self._invite_response(response, now)
        return self._non_invite_response(response, now)

    def _invite_response(self, response: Response, now: float) -> list[Action]:
        status = response.status
        if self.state in (State.CALLING, State.PROCEEDING):
            if status < 200:
                self.state = State.PROCEEDING
                self.deadlines.pop("A", None)
                # Timer B guards only the Calling state; a proxy's Timer C is the TU's business.
                self.deadlines.pop("B", None)
                return [ToTU(response)]
            if status < 300:
                self.state = State.ACCEPTED
                self.deadlines.clear()
                self._arm("M", now, self.timers.m)
                # RFC 6026: further 2xx still go to the TU, so `tu_data` stays; nothing
                # is retransmitted any more.
                self.origin, self.data = None, b""
                return [ToTU(response)]
            self.state = State.COMPLETED
            self.deadlines.clear()
            self.ack = build_ack_for_failure(self.request, response).to_bytes()
            self._arm("D", now, self.timers.d(self.peer.reliable))
            ack = Send(self.ack, self.peer)
            self.data = b""
            self._settle()
            return [ack, ToTU(response)]
        if self.state is State.ACCEPTED and 200 <= status < 300:
            return [ToTU(response)]  # RFC 6026: further 2xx (forks, retransmissions) go up
        if self.state is State.COMPLETED and status >= 300 and self.ack is not None:
            return [Send(self.ack, self.peer)]
        return []

    def _non_invite_response(self, response: Response, now: float) -> list[Action]:
        if self.state not in (State.TRYING, State.PROCEEDING):
            return []
        if response.status < 200:
            self.state = State.PROCEEDING
            return [ToTU(response)]
        self.state = State.COMPLETED
        self.deadlines.clear()
        self._arm("K", now, self.timers.k(self.peer.reliable))
        self.data = b""
        self._settle()
        return [ToTU(response)]

    def fire(self, name: TimerName, now: float) -> list[Action]:
        self.deadlines.pop(name, None)
        if name in ("A", "E"):
            if name == "E" and self.state is State.PROCEEDING:
                self.interval = self.timers.t2
            else:
                self.interval = (
                    2 * self.interval if name == "A" else min(2 * self.interval, self.timers.t2)
                )
            self._arm(name, now, self.interval)
            return [Send(self.data, self.peer, self.request)]
        if name in ("B", "F"):
            self._terminate()
            return [TimedOut(name)]
        self._terminate()  # D, K, M
        return []

    def transport_failed(self) -> list[Action]:
        """RFC 3261 17.1.4: the request could not be sent (connection refused, TLS
        handshake failed). A transaction still waiting for its final response ends now and
        tells the TU, which treats it as a 503 and moves on (RFC 3263 4.3)."""
        if self.state not in (State.CALLING, State.TRYING, State.PROCEEDING):
            return []
        self._terminate()
        return [TimedOut("transport")]


def build_ack_for_failure(invite: Request, response: Response) -> Request:
    """The ACK a client transaction sends for a 300-699 (RFC 3261 section 17.1.1.3)."""
    ack = Request("ACK", invite.uri_text)
    ack.headers.add("Via", invite.headers.get_all("Via")[0])
    for name in ("Route",):
        for value in invite.headers.get_all(name):
            ack.headers.add(name, value)
    ack.headers.add("From", invite.headers.get("From") or "")
    ack.headers.add("To", response.headers.get("To") or "")
    ack.headers.add("Call-ID", invite.call_id)
    ack.headers.add("CSeq", f"{invite.cseq.seq} ACK")
    ack.headers.add("Max-Forwards", "70")
    ack.headers.add("Content-Length", "0")
    return ack


@dataclass(eq=False, slots=True)
class ServerTransaction(Transaction):
    """INVITE (Proceeding/Accepted/Completed/Confirmed) and non-INVITE (Trying/Proceeding/
    Completed) server transactions. `peer` is where responses go (RFC 3261 section 18.2.2)."""

    last_response: Response | None = None
    last_data: bytes = b""
    # The To tag the layer sent for this request in the 200 to a CANCEL of it; the TU's
    # responses are then given it.
    to_tag: str | None = None
    # The layer's merged-request key (RFC 3261 8.2.2.2), kept past the request.
    merge_key: tuple[Any, ...] | None = None

    def start(self) -> None:
        self.state = State.PROCEEDING if self.is_invite else State.TRYING

    def retransmission(self, now: float) -> list[Action]:
        """The same request again: answer with the last response, if any (section 17.2)."""
        if self.state in (State.PROCEEDING, State.COMPLETED) and self.last_data:
            return [Send(self.last_data, self.peer, self.last_response)]
        return []

    def ack(self, ack: Request, now: float) -> list[Action]:
        if not self.is_invite:
            return []
        if self.state is State.COMPLETED:
            self.state = State.CONFIRMED
            self.deadlines.pop("G", None)
            self.deadlines.pop("H", None)
            self._arm("I", now, self.timers.i(self.peer.reliable))
            self._settle()
            return []
        if self.state is State.ACCEPTED:
            return [ToTU(ack)]  # the ACK for a 2xx belongs to the dialog, not to us
        return []

    def respond(self, response: Response, now: float) -> list[Action]:
        if self.state not in (State.TRYING, State.PROCEEDING, State.ACCEPTED):
            return []
        status = response.status
        data = response.to_bytes()
        if self.state is State.ACCEPTED:
            # RFC 6026: the TU retransmits its 2xx through us while Timer L runs.
            return [Send(data, self.peer, response)] if 200 <= status < 300 else []
        self.last_response = response
        self.last_data = data
        if status < 200:
            self.state = State.PROCEEDING
        elif self.is_invite and status < 300:
            self.state = State.ACCEPTED
            self._arm("L", now, self.timers.l)
            # The 2xx is the TU's to retransmit and the ACK goes up as a dialog's: the
            # request and the call are not needed here for Timer L's 32 s.
            self.keep_tag()
            self.origin, self.tu_data = None, None
        elif self.is_invite:
            self.state = State.COMPLETED
            self.interval = self.timers.t1
            if not self.peer.reliable:
                self._arm("G", now, self.interval)
            self._arm("H", now, self.timers.h)
        else:
            self.state = State.COMPLETED
            if self.peer.reliable:
                self._terminate()
            else:
                self._arm("J", now, self.timers.j)
                self.last_response = None
                self._settle()
        return [Send(data, self.peer, response)]

    def keep_tag(self) -> None:
        """The To tag a CANCEL's 200 carries: the request's own (a re-INVITE) or that of
        its responses; taken before the request goes."""
        if self.to_tag is None:
            last = self.last_response
            own = self.origin.to.tag if self.origin is not None else None
            self.to_tag = own or (last.to.tag if last else None)

    def _settle(self) -> None:
        self.keep_tag()
        # Named, not super(): a slotted dataclass is a new class, which the zero-argument
        # form, bound to the class as written, does not know.
        Transaction._settle(self)

    def fire(self, name: TimerName, now: float) -> list[Action]:
        self.deadlines.pop(name, None)
        if name == "G" and self.state is State.COMPLETED:
            self.interval = min(2 * self.interval, self.timers.t2)
            self._arm("G", now, self.interval)
            assert self.last_response is not None
            return [Send(self.last_data, self.peer, self.last_response)]
        if name == "H":
            self._terminate()
            return [TimedOut("H")]
        if name in ("I", "J", "L"):
            self._terminate()
        return []
