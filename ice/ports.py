"""Media ports from `listen.media_ports`: each socket binds the next free port of the range
(round robin, so a port just released is not reused at once), and gives it back on close."""

from __future__ import annotations

import asyncio
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

    async def bind_udp(
        self, factory: Callable[[], P], host: str
    ) -> tuple[asyncio.DatagramTransport, P, int]:
        """A UDP socket on `host` at a free port of the range. Ports taken by other programs
        are skipped; when none is left, PortsExhausted."""
        loop = asyncio.get_running_loop()
        for _ in range(self.size):
            port = self._next
            self._next = self.first if port == self.last else port + 1
            if port in self.in_use:
                continue
            try:
                transport, protocol = await loop.create_datagram_endpoint(
                    factory, local_addr=(host, port)
                )
            except OSError:
                continue
            self.in_use.add(port)
            return transport, protocol, port
        raise PortsExhausted(
            f"no free media port in {self.first}-{self.last} on {host} "
            f"({len(self.in_use)} in use by calls)"
        )

    def release(self, port: int) -> None:
        self.in_use.discard(port)
