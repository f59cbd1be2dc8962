"""Media ports come from the configured range, skip ports others hold, run out with a clear
error, and come back on release."""

from __future__ import annotations

import asyncio
import socket

import pytest

from ice.errors import PortsExhausted
from ice.ports import PortAllocator
from tests.peers import free_port


async def test_ports_from_the_range_round_robin_then_exhausted_then_released() -> None:
    base = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
        held.bind(("127.0.0.1", base + 1))  # someone else's
        ports = PortAllocator(base, base + 2)
        got = []
        for _ in range(2):
            transport, _, port = await ports.bind_udp(asyncio.DatagramProtocol, "127.0.0.1")
            got.append((transport, port))
        assert [p for _, p in got] == [base, base + 2]
        with pytest.raises(PortsExhausted, match=f"no free media port in {base}-{base + 2}"):
            await ports.bind_udp(asyncio.DatagramProtocol, "127.0.0.1")
        transport, port = got[0]
        transport.close()
        await asyncio.sleep(0)  # the socket closes on the next loop iteration
        ports.release(port)
        again, _, port = await ports.bind_udp(asyncio.DatagramProtocol, "127.0.0.1")
        assert port == base
        again.close()
        got[1][0].close()
