"""RFC 3261 timer values (section 17 and table 4); one object so tests and Lync tuning can
shorten or stretch them together."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Timers:
    t1: float = 0.5  # RTT estimate
    t2: float = 4.0  # maximum retransmit interval for non-INVITE requests and INVITE responses
    t4: float = 5.0  # maximum time a message stays in the network

    @property
    def b(self) -> float:  # INVITE client transaction timeout
        return 64 * self.t1

    @property
    def f(self) -> float:  # non-INVITE client transaction timeout
        return 64 * self.t1

    @property
    def h(self) -> float:  # wait for ACK after a non-2xx final response
        return 64 * self.t1

    @property
    def j(self) -> float:  # non-INVITE server: absorb request retransmissions (unreliable)
        return 64 * self.t1

    @property
    def l(self) -> float:  # noqa: E743 - RFC 6026 name: INVITE server Accepted state
        return 64 * self.t1

    @property
    def m(self) -> float:  # RFC 6026: INVITE client Accepted state
        return 64 * self.t1

    def d(self, reliable: bool) -> float:  # INVITE client: absorb final retransmissions
        return 0.0 if reliable else max(32.0, 64 * self.t1)

    def i(self, reliable: bool) -> float:  # INVITE server: absorb ACK retransmissions
        return 0.0 if reliable else self.t4

    def k(self, reliable: bool) -> float:  # non-INVITE client: absorb final retransmissions
        return 0.0 if reliable else self.t4


DEFAULT = Timers()
