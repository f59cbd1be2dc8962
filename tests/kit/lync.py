"""What Lync-side tests need around the gateway: a STUN server, a TURN server that never
answers, and port allocation that can be held mid-way."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

from aioice import stun

from ice.ports import PortAllocator
from ice.session import TurnSettings


class StunServer(asyncio.DatagramProtocol):
    """Answers every Binding request with the address it came from."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        request = stun.parse_message(data)
        response = stun.Message(message_method=request.message_method,
                                message_class=stun.Class.RESPONSE,
                                transaction_id=request.transaction_id)
        response.attributes["XOR-MAPPED-ADDRESS"] = addr
        self.transport.sendto(bytes(response), addr)  # type: ignore[attr-defined]


@contextlib.contextmanager
def silent_turn() -> Iterator[TurnSettings]:
    """A TURN server that never answers: gathering waits for it (5 s) unless stopped."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        yield TurnSettings("127.0.0.1", silent.getsockname()[1], "u", "p")


async def wait_for_ports(ports: PortAllocator, count: int) -> None:
    for _ in range(200):
        if len(ports.in_use) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{sorted(ports.in_use)} in use, {count} expected")


class HeldPorts(PortAllocator):
    """ICE's host ports wait for `go`: the call can end while its media is being prepared.
    (The SIP side's ports are taken at once, with no wait to end in.)"""

    def __init__(self, first: int, last: int) -> None:
        super().__init__(first, last)
        self.waiting = asyncio.Event()
        self.go = asyncio.Event()

    async def bind_udp(self, *args: Any, **kwargs: Any) -> Any:
        self.waiting.set()
        await self.go.wait()
        return await super().bind_udp(*args, **kwargs)
