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

    def take_udp(self, host: str) -> tuple[socket.socket, int]:
        """A bound, non-blocking UDP socket on `host` at a free port of the range, at once
        (no loop turn: a call's relay ports are reserved while its INVITE is handled).
        Ports taken by other programs are skipped; when none is left, PortsExhausted."""
        for _ in range(self.size):
            port = self._next
            self._next = self.first if port == self.last else port + 1
            sock = self._take(host, port)
            if sock is not None:
                return sock, port
        raise self._exhausted(host, "port")

    def take_udp_pair(self, host: str) -> tuple[socket.socket, socket.socket, int]:
        """Two bound UDP sockets on `host`, at an even port of the range and the one after
        it, and the even port. PortsExhausted when no such pair is free."""
        first_even = self.first + self.first % 2
        pairs = (self.last + 1 - first_even) // 2
        for _ in range(pairs):
            port = self._next + self._next % 2
            if port + 1 > self.last:
                port = first_even
            self._next = port + 2 if port + 2 <= self.last else self.first
            if port + 1 in self.in_use:
                continue
            even = self._take(host, port)
            if even is None:
                continue
            odd = self._take(host, port + 1)
            if odd is None:
                even.close()
                self.release(port)
                continue
            return even, odd, port
        raise self._exhausted(host, "port pair (even RTP, RTCP after it)")

    async def bind_udp(
        self, factory: Callable[[], P], host: str
    ) -> tuple[asyncio.DatagramTransport, P, int]:
        """`take_udp` with the loop's datagram transport and protocol `factory` on it."""
        sock, port = self.take_udp(host)
        try:
            transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
                factory, sock=sock)
        except BaseException:
            sock.close()
            self.release(port)
            raise
        return transport, protocol, port

    def _take(self, host: str, port: int) -> socket.socket | None:
        """The socket at `port`, or None when a call or another program holds it."""
        if port in self.in_use:
            return None
        # Non-blocking from the start: one system call fewer than setblocking() after.
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                             socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
        try:
            sock.bind((host, port))
        except OSError:
            sock.close()
            return None
        self.in_use.add(port)
        return sock

    def _exhausted(self, host: str, what: str) -> PortsExhausted:
        return PortsExhausted(
            f"no free media {what} in {self.first}-{self.last} on {host} "
            f"({len(self.in_use)} in use by calls)"
        )

    def release(self, port: int) -> None:
        self.in_use.discard(port)
