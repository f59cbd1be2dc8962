"""Media ports from `listen.media_ports`: each socket binds the next free port of the range
(round robin, so a port just released is not reused at once), and gives it back on close.
An RTP port with its own RTCP port is bound as a pair, RTP on an even port and RTCP on the
next one (RFC 3550 11), because that is where a peer sends RTCP when the SDP has no a=rtcp."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import TypeVar

from ice.errors import PortsExhausted

P = TypeVar("P", bound=asyncio.DatagramProtocol)
Q = TypeVar("Q", bound=asyncio.DatagramProtocol)


class PortAllocator:
    def __init__(self, first: int, last: int) -> None:
        if not 0 < first <= last <= 65535:
            raise ValueError(f"bad media port range {first}..{last}")
        self.first, self.last = first, last
        self._next = first
        self.in_use: set[int] = set()

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    async def bind_udp(
        self, factory: Callable[[], P], host: str
    ) -> tuple[asyncio.DatagramTransport, P, int]:
        """A UDP socket on `host` at a free port of the range. Ports taken by other programs
        are skipped; when none is left, PortsExhausted."""
        for _ in range(self.size):
            port = self._next
            self._next = self.first if port == self.last else port + 1
            bound = await self._bind(factory, host, port)
            if bound is not None:
                return (*bound, port)
        raise self._exhausted(host, "port")

    async def bind_udp_pair(
        self, rtp: Callable[[], P], rtcp: Callable[[], Q], host: str
    ) -> tuple[tuple[asyncio.DatagramTransport, P], tuple[asyncio.DatagramTransport, Q], int]:
        """Two UDP sockets on `host`, at an even port of the range and the one after it;
        returns both and the even port. PortsExhausted when no such pair is free."""
        first_even = self.first + self.first % 2
        pairs = (self.last + 1 - first_even) // 2
        for _ in range(pairs):
            port = self._next + self._next % 2
            if port + 1 > self.last:
                port = first_even
            self._next = port + 2 if port + 2 <= self.last else self.first
            if port + 1 in self.in_use:
                continue
            even = await self._bind(rtp, host, port)
            if even is None:
                continue
            odd = await self._bind(rtcp, host, port + 1)
            if odd is None:
                even[0].close()
                self.release(port)
                continue
            return even, odd, port
        raise self._exhausted(host, "port pair (even RTP, RTCP after it)")

    async def _bind(self, factory: Callable[[], P], host: str,
                    port: int) -> tuple[asyncio.DatagramTransport, P] | None:
        """The socket at `port`, or None when a call or another program holds it."""
        if port in self.in_use:
            return None
        # Bound here rather than by the loop from `local_addr`: a port another program holds
        # fails at bind() before any loop machinery, and the loop resolves no address.
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                             socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((host, port))
            transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
                factory, sock=sock)
        except OSError:
            sock.close()
            return None
        self.in_use.add(port)
        return transport, protocol

    def _exhausted(self, host: str, what: str) -> PortsExhausted:
        return PortsExhausted(
            f"no free media {what} in {self.first}-{self.last} on {host} "
            f"({len(self.in_use)} in use by calls)"
        )

    def release(self, port: int) -> None:
        self.in_use.discard(port)
