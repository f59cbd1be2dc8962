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


def test_rtp_and_rtcp_are_bound_as_an_even_port_and_the_one_after_it() -> None:
    """RFC 3550 11: an SDP without a=rtcp means RTCP on RTP's port + 1, so a pair is bound
    together at an even port: a pair whose odd port someone else holds is skipped whole, and
    at the end of the range the search wraps to the first pair instead of pairing the last
    port with the one below it."""
    base = free_port() // 2 * 2
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
        held.bind(("127.0.0.1", base + 1))  # someone else's: base cannot be an RTP port
        ports = PortAllocator(base - 1, base + 4)  # pairs: base, base+2 (base+4 has no +5)
        rtp, rtcp, port = ports.take_udp_pair("127.0.0.1")
        assert port == base + 2 and ports.in_use == {base + 2, base + 3}
        assert rtp.getsockname()[1] == base + 2 and rtcp.getsockname()[1] == base + 3
        assert not rtp.getblocking() and not rtcp.getblocking()
        with pytest.raises(PortsExhausted, match="no free media port pair"):
            ports.take_udp_pair("127.0.0.1")
        assert ports.in_use == {base + 2, base + 3}  # the failed search kept nothing
        rtp.close()
        rtcp.close()
    ports.release(base + 2)
    ports.release(base + 3)
    again = ports.take_udp_pair("127.0.0.1")
    assert again[2] == base  # wrapped past base + 4 to the first pair, now free
    again[0].close()
    again[1].close()
