"""Who is at the other end of a message: the transport's vocabulary, shared by every layer
above it (the SIP core, calls, the registrar)."""

from __future__ import annotations

import enum
from dataclasses import field

from gateway.frozen import frozen


class Transport(enum.StrEnum):
    """SIP's transport names as they appear in Via (RFC 3261 18): the one spelling used in
    code. The config file spells them in lower case (`udp`); `parse` takes either."""

    UDP = "UDP"
    TCP = "TCP"
    TLS = "TLS"

    @classmethod
    def parse(cls, name: str) -> Transport:
        return cls(name.upper())

    @property
    def reliable(self) -> bool:
        return self is not Transport.UDP


@frozen
class Peer:
    """Where a message came from or goes to; `connection` pins a TCP/TLS connection."""

    transport: Transport
    host: str
    port: int
    connection: int | None = None
    # The name a TLS connection opened toward this peer must be certified for (RFC 5922:
    # the name it was found under, not the address); not part of the peer's identity.
    server_name: str = field(default="", compare=False)

    @property
    def reliable(self) -> bool:
        return self.transport != Transport.UDP  # tests may still build peers from plain strings
