"""The relay's sockets: plain UDP toward the SIP side (RTP and RTCP ports, or one with
rtcp-mux, latching onto where packets really come from), and the ICE session toward Lync."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from gateway import logs
from ice.ports import PortAllocator
from ice.session import IceSession

log = logs.get(__name__)
Receive = Callable[[bytes, bool | None], None]  # (packet, is RTCP, None: tell by type)
RELATCH_AFTER = 1.0  # seconds of silence from the latched address before moving


class UdpEndpoint(asyncio.DatagramProtocol):
    """One media port toward a SIP endpoint. Symmetric RTP: replies go to where packets
    come from, which behind NAT is not what the SDP said."""

    def __init__(self, remote: tuple[str, int], rtcp: bool | None, receive: Receive) -> None:
        self.remote = remote
        self.rtcp = rtcp  # True: the RTCP port; False: RTP only; None: rtcp-mux
        self.receive = receive
        self.latched = False
        self.last_from_remote = 0.0
        self.foreign = 0  # packets from other addresses, dropped
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    @classmethod
    async def open(cls, ports: PortAllocator, host: str, remote: tuple[str, int],
                   rtcp: bool | None, receive: Receive) -> UdpEndpoint:
        _, endpoint, port = await ports.bind_udp(lambda: cls(remote, rtcp, receive), host)
        endpoint.port = port
        return endpoint

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        source = (str(addr[0]), int(addr[1]))
        now = time.monotonic()
        if source != self.remote:
            if self.latched and now - self.last_from_remote < RELATCH_AFTER:
                self.foreign += 1
                return
            log.info("media_latched", port=self.port, sdp=f"{self.remote[0]}:{self.remote[1]}",
                     actual=f"{source[0]}:{source[1]}")
            self.remote = source
        self.latched = True
        self.last_from_remote = now
        self.receive(data, self.rtcp)

    def point_at(self, remote: tuple[str, int]) -> None:
        """The address from the SDP; latching starts over from it."""
        self.remote = remote
        self.latched = False

    def send(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.sendto(data, self.remote)

    def close(self, ports: PortAllocator) -> None:
        if self.transport is not None:
            self.transport.close()
        # The transport holds us and we held it, and `receive` leads back to the relay that
        # holds us: cut both so a finished call is freed by reference counting, not left to
        # a collector pause (hundreds of ms under load, where calls set up).
        self.transport = None
        self.receive = _ignore
        ports.release(self.port)


def _ignore(data: bytes, rtcp: bool | None) -> None:
    """Where packets still queued for a closed endpoint go."""


class SipMedia:
    """The SIP side of one stream: an RTP port and an RTCP port, or one with rtcp-mux."""

    def __init__(self, rtp: UdpEndpoint, rtcp_endpoint: UdpEndpoint | None) -> None:
        self.rtp = rtp
        self.rtcp_endpoint = rtcp_endpoint

    @classmethod
    async def open(cls, ports: PortAllocator, host: str, remote: tuple[str, int],
                   remote_rtcp: tuple[str, int] | None, receive: Receive) -> SipMedia:
        """`remote_rtcp` None means rtcp-mux (one port both ways). Otherwise RTCP is on the
        port after RTP's, as the SDP we write implies by leaving out a=rtcp."""
        if remote_rtcp is None:
            return cls(await UdpEndpoint.open(ports, host, remote, None, receive), None)
        (_, rtp), (_, rtcp), port = await ports.bind_udp_pair(
            lambda: UdpEndpoint(remote, False, receive),
            lambda: UdpEndpoint(remote_rtcp, True, receive), host)
        rtp.port, rtcp.port = port, port + 1
        return cls(rtp, rtcp)

    def send(self, packet: bytes, rtcp: bool) -> None:
        (self.rtcp_endpoint if rtcp and self.rtcp_endpoint is not None else self.rtp).send(
            packet)

    def close(self, ports: PortAllocator) -> None:
        self.rtp.close(ports)
        if self.rtcp_endpoint is not None:
            self.rtcp_endpoint.close(ports)


class IceMedia:
    """The Lync side of one stream: the ICE session's selected pairs. Component 1 is RTP,
    2 is RTCP; with one component, RTCP is multiplexed."""

    def __init__(self, session: IceSession, receive: Receive) -> None:
        self.session = session
        self.mux = session.components == 1
        session.on_data = lambda data, component: receive(
            data, None if self.mux else component == 2)

    def send(self, packet: bytes, rtcp: bool) -> None:
        self.session.send_now(packet, 2 if rtcp and not self.mux else 1)
