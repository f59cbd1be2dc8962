"""Overload control: how many new dialogs the node takes, from its own measured headroom.

Sans-I/O. The adapter measures, every `Policy.interval`, how late the event loop ran a timer
(lag), how full the SIP receive buffers are, and how busy the loop's thread was, and calls
`observe`; the endpoint asks `admit()` for each new dialog-creating request (INVITE,
REGISTER, SUBSCRIBE without a To tag, not a retransmission) and answers the others 503 +
Retry-After statelessly, before any transaction exists. Requests inside dialogs and
retransmissions of requests already taken are never shed, so calls in progress complete.

The share of new dialogs admitted moves as TCP's window does (RFC 5681's AIMD): cut by the
pressure when a signal is over its target, grown back quickly when every signal is well under
it, and slowly in between, so the node settles where it serves what it can instead of taking
everything and collapsing (the congestion collapse RFC 7339 describes). Admission within the
share is deterministic (a credit per request), so shedding is smooth, not bursty.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Dialog-creating requests: what is shed. Everything else belongs to work already taken.
DIALOG_CREATING = frozenset({"INVITE", "REGISTER", "SUBSCRIBE"})


@dataclass(frozen=True, slots=True)
class Policy:
    interval: float = 0.1  # seconds between observations
    lag_target: float = 0.02  # seconds the loop may run a due timer late
    queue_target: float = 0.1  # share of a SIP receive buffer that may be filled
    cpu_target: float = 0.85  # share of one core the loop's thread may use
    floor: float = 0.02  # the least share admitted: a trickle, so recovery is seen
    validity: float = 2.0  # seconds an RFC 7339 feedback holds (oc-validity)


@dataclass(frozen=True, slots=True)
class Observation:
    lag: float  # seconds
    queue: float  # fill of the fullest SIP receive buffer, 0..1
    cpu: float  # share of a core used by the loop's thread since the last observation

    def pressure(self, policy: Policy) -> tuple[float, str]:
        """The largest signal against its target (1.0: at the target), and which it is."""
        return max((self.lag / policy.lag_target, "event loop lag"),
                   (self.queue / policy.queue_target, "receive queue"),
                   (self.cpu / policy.cpu_target, "cpu"))


@dataclass(slots=True)
class OverloadControl:
    policy: Policy = field(default_factory=Policy)
    share: float = 1.0  # of new dialogs admitted
    reason: str = ""  # the signal that last cut the share
    shed: dict[str, int] = field(default_factory=dict)  # requests shed, by reason
    seq: int = 0  # RFC 7339 oc-seq: grows with every change of the share
    last_cut: float | None = None  # when the share was last cut
    _credit: float = 0.0
    _over: int = 0  # consecutive observations over a target

    def observe(self, now: float, seen: Observation) -> None:
        pressure, why = seen.pressure(self.policy)
        before = self.share
        # A full receive buffer is load already lost; a late timer or a busy interval may be
        # one pause (a collection, start-up work): those must last two intervals to count.
        self._over = self._over + 1 if pressure > 1.0 else 0
        if pressure > 1.0 and (why == "receive queue" or self._over >= 2):
            # Multiplicative decrease by the excess: twice the target halves the share.
            self.share = max(self.policy.floor, self.share / min(pressure, 4.0))
            self.reason, self.last_cut = why, now
        elif pressure > 1.0:
            pass  # a first interval over the target: wait for the next
        elif pressure < 0.5:
            self.share = min(1.0, self.share * 1.5 + 0.05)  # plenty of room: back fast
        elif self.share < 1.0:
            self.share = min(1.0, self.share + 0.02)  # near the target: probe gently
        if self.share != before:
            self.seq += 1

    @property
    def shedding(self) -> bool:
        return self.share < 1.0

    def admit(self) -> bool:
        """Whether the next new dialog is taken; one that is not is counted as shed."""
        self._credit += self.share
        if self._credit >= 1.0:
            self._credit -= 1.0
            return True
        self.shed[self.reason] = self.shed.get(self.reason, 0) + 1
        return False

    def feedback(self, now: float) -> str | None:
        """RFC 7339 (loss algorithm) parameters for the top Via of a response to a client
        that supports them: the share to drop while shedding, and 0 with `oc-validity=0`
        once it has stopped (for `validity` after the last cut); None otherwise."""
        if self.shedding:
            drop = round(100 * (1.0 - self.share))
            return (f"oc={drop};oc-algo=\"loss\";oc-validity={int(self.policy.validity * 1000)}"
                    f";oc-seq={self.seq}")
        if self.last_cut is not None and now - self.last_cut < self.policy.validity:
            return f"oc=0;oc-algo=\"loss\";oc-validity=0;oc-seq={self.seq}"
        self.last_cut = None  # all told: messages need no feedback looked for any more
        return None
