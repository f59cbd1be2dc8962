"""Candidate lines in the forms Lync and standard agents write them.

- RFC 5245 `a=candidate:<foundation> <component> <transport> <priority> <address> <port>
  typ <type> [raddr <a> rport <p>] [tcptype <t>] [<extension> <value>]...`
- Lync's `a=x-candidate-ipv6:` with the same grammar for IPv6 addresses, and its TCP
  transports `TCP-PASS` / `TCP-ACT` (RFC 6544's passive/active, spelled Microsoft's way).
- The draft-6 ICE of Office Communicator 2007 in the fallback part of a multipart offer:
  `a=candidate:<username> <component> <password> <transport> <qvalue> <address> <port>`,
  parsed so the offer can be read; its checks are not run (aioice speaks RFC 5245).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import aioice

from ice.errors import CandidateError

TYPES = ("host", "srflx", "prflx", "relay")


@dataclass(frozen=True, slots=True)
class Candidate:
    foundation: str
    component: int
    transport: str  # "UDP", "TCP" (with tcptype), as written upper-case
    priority: int
    address: str
    port: int
    type: str
    related_address: str | None = None
    related_port: int | None = None
    tcptype: str | None = None  # active | passive | so
    extensions: tuple[tuple[str, str], ...] = ()

    @property
    def is_udp(self) -> bool:
        return self.transport == "UDP"

    @property
    def ipv6(self) -> bool:
        return ":" in self.address

    def to_sdp(self) -> str:
        """The RFC 5245 value (after `candidate:`)."""
        out = (f"{self.foundation} {self.component} {self.transport} {self.priority} "
               f"{self.address} {self.port} typ {self.type}")
        if self.related_address is not None and self.related_port is not None:
            out += f" raddr {self.related_address} rport {self.related_port}"
        if self.tcptype is not None:
            out += f" tcptype {self.tcptype}"
        for key, value in self.extensions:
            out += f" {key} {value}"
        return out

    def attribute(self) -> str:
        """The whole attribute as Lync expects it: IPv6 candidates as x-candidate-ipv6."""
        name = "x-candidate-ipv6" if self.ipv6 else "candidate"
        return f"{name}:{self.to_sdp()}"

    def to_aioice(self) -> aioice.Candidate:
        return aioice.Candidate(
            foundation=self.foundation, component=self.component,
            transport=self.transport.lower(), priority=self.priority, host=self.address,
            port=self.port, type=self.type, related_address=self.related_address,
            related_port=self.related_port, tcptype=self.tcptype,
        )

    @classmethod
    def from_aioice(cls, c: aioice.Candidate) -> Candidate:
        return cls(c.foundation, c.component, c.transport.upper(), c.priority, c.host, c.port,
                   c.type, c.related_address, c.related_port, c.tcptype)

    def with_address(self, address: str) -> Candidate:
        """The same candidate advertised at another address (static NAT)."""
        return Candidate(self.foundation, self.component, self.transport, self.priority,
                         address, self.port, self.type, self.related_address,
                         self.related_port, self.tcptype, self.extensions)


def parse_candidate(value: str) -> Candidate:
    """An RFC 5245 (or Lync x-candidate-ipv6) candidate value."""
    bits = value.split()
    if len(bits) < 8 or bits[6] != "typ":
        raise CandidateError(f"candidate {value[:80]!r}: expected '<foundation> <component> "
                             "<transport> <priority> <address> <port> typ <type> ...'")
    foundation, component, transport, priority, address, port = bits[:6]
    kind = bits[7]
    if not component.isdigit() or not 1 <= int(component) <= 256:
        raise CandidateError(f"candidate component {component!r} is not 1..256")
    if not priority.isdigit() or int(priority) >= 2**32:
        raise CandidateError(f"candidate priority {priority!r} is not 0..2^32-1")
    _check_address(address)
    if not port.isdigit() or int(port) > 65535:
        raise CandidateError(f"candidate port {port!r} is not 0..65535")
    if kind not in TYPES:
        raise CandidateError(f"candidate type {kind!r} is not one of {', '.join(TYPES)}")
    upper = transport.upper()  # Lync's TCP-PASS/TCP-ACT kept as written, for writing back
    tcptype: str | None = {"TCP-PASS": "passive", "TCP-ACT": "active"}.get(upper)
    raddr: str | None = None
    rport: int | None = None
    extensions: list[tuple[str, str]] = []
    rest = bits[8:]
    if len(rest) % 2:
        raise CandidateError(f"candidate {value[:80]!r}: extension without a value")
    for key, val in zip(rest[::2], rest[1::2], strict=True):
        if key == "raddr":
            _check_address(val)
            raddr = val
        elif key == "rport":
            if not val.isdigit():
                raise CandidateError(f"candidate rport {val!r} is not a port")
            rport = int(val)
        elif key == "tcptype":
            tcptype = val
        else:
            extensions.append((key, val))
    return Candidate(foundation, int(component), upper, int(priority), address, int(port),
                     kind, raddr, rport, tcptype, tuple(extensions))


@dataclass(frozen=True, slots=True)
class Draft6Candidate:
    """An Office Communicator 2007 (ICE draft 6) candidate: credentials travel per candidate
    and priority is a q-value."""

    username: str
    component: int
    password: str
    transport: str
    qvalue: float
    address: str
    port: int


def parse_draft6(value: str) -> Draft6Candidate:
    bits = value.split()
    if len(bits) != 7:
        raise CandidateError(f"draft-6 candidate {value[:80]!r}: expected '<username> "
                             "<component> <password> <transport> <qvalue> <address> <port>'")
    username, component, password, transport, qvalue, address, port = bits
    try:
        q = float(qvalue)
    except ValueError:
        raise CandidateError(f"draft-6 candidate q-value {qvalue!r} is not a number") from None
    _check_address(address)
    if not component.isdigit() or not port.isdigit() or int(port) > 65535:
        raise CandidateError(f"draft-6 candidate {value[:80]!r}: bad component or port")
    return Draft6Candidate(username, int(component), password, transport.upper(), q, address,
                           int(port))


def is_draft6(value: str) -> bool:
    """Draft-6 lines have 7 fields and no `typ`; RFC 5245 lines always have `typ`."""
    bits = value.split()
    return len(bits) == 7 and "typ" not in bits


def _check_address(address: str) -> None:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise CandidateError(f"candidate address {address!r} is not an IP address") from None
