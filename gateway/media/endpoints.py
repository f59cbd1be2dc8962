"""The relay's sockets: plain UDP toward the SIP side (RTP and RTCP ports, or one with
rtcp-mux, latching onto where packets really come from), and the ICE session toward Lync."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

from gateway import logs
from ice.ports import PortAllocator
from ice.session import IceSession

log = logs.get(__name__)
Receive = Callable[[bytes, bool | None], None]  # (packet, is RTCP, None: tell by type)
RELATCH_AFTER = 1.0  # seconds of silence from the latched address before moving
MAX_PACKET = 65536  # a datagram is never longer; a shorter buffer would truncate silently


class UdpEndpoint:
    """One media port toward a SIP endpoint. Symmetric RTP: replies go to where packets
    come from, which behind NAT is not what the SDP said.

    A plain non-blocking socket, read through the loop's `add_reader`: opened without a
    loop turn (an asyncio datagram endpoint needs one per socket, and a task to wait in), so
    an anchored call gets its ports, and its INVITE goes out, while the caller's INVITE is
    handled. A packet the kernel will not take at once is dropped, as the network drops RTP,
    rather than queued behind the ones that follow it."""

    def __init__(self, sock: socket.socket, port: int, remote: tuple[str, int],
                 rtcp: bool | None, receive: Receive) -> None:
        self.remote = remote
        self.rtcp = rtcp  # True: the RTCP port; False: RTP only; None: rtcp-mux
        self.receive = receive
        self.latched = False
        self.last_from_remote = 0.0
        self.foreign = 0  # packets from other addresses, dropped
        self.port = port
        self._sock: socket.socket | None = sock
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._readable)

    @classmethod
    def open(cls, ports: PortAllocator, host: str, remote: tuple[str, int],
             rtcp: bool | None, receive: Receive) -> UdpEndpoint:
        sock, port = ports.take_udp(host)
        return cls(sock, port, remote, rtcp, receive)

    def _readable(self) -> None:
        # One datagram per wake-up: reading until the socket is empty ends every wake-up in
        # a raised BlockingIOError, which costs more than the read; a datagram still queued
        # makes the (level-triggered) poll report the socket again on the next loop turn,
        # together with every other socket ready by then.
        sock = self._sock
        if sock is None:
            return
        try:
            data, addr = sock.recvfrom(MAX_PACKET)
        except OSError:
            # Nothing after all, or an ICMP error for an earlier send (the far port
            # closed), which the kernel reports once: nothing is lost.
            return
        self._packet(data, (addr[0], addr[1]))  # IPv6 adds flow and scope: left out

    def _packet(self, data: bytes, source: tuple[str, int]) -> None:
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
        sock = self._sock
        if sock is None:
            return
        # Not contextlib.suppress: a context manager per packet costs more than the send.
        try:  # noqa: SIM105
            sock.sendto(data, self.remote)
        except OSError:
            pass  # a full buffer or an unreachable peer: this packet is lost, as on the wire

    def close(self, ports: PortAllocator) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            self._loop.remove_reader(sock.fileno())
            sock.close()
            ports.release(self.port)
        # `receive` leads back to the relay that holds us: cut it so a finished call is
        # freed by reference counting, not left to a collector pause (hundreds of ms under
        # load, where calls set up).
        self.receive = _ignore


def _ignore(data: bytes, rtcp: bool | None) -> None:
    """Where packets still queued for a closed endpoint go."""


class SipMedia:
    """The SIP side of one stream: an RTP port and an RTCP port, or one with rtcp-mux."""

    def __init__(self, rtp: UdpEndpoint, rtcp_endpoint: UdpEndpoint | None) -> None:
        self.rtp = rtp
        self.rtcp_endpoint = rtcp_endpoint

    @classmethod
    def open(cls, ports: PortAllocator, host: str, remote: tuple[str, int],
             remote_rtcp: tuple[str, int] | None, receive: Receive) -> SipMedia:
        """`remote_rtcp` None means rtcp-mux (one port both ways). Otherwise RTCP is on the
        port after RTP's, as the SDP we write implies by leaving out a=rtcp."""
        if remote_rtcp is None:
            return cls(UdpEndpoint.open(ports, host, remote, None, receive), None)
        even, odd, port = ports.take_udp_pair(host)
        return cls(UdpEndpoint(even, port, remote, False, receive),
                   UdpEndpoint(odd, port + 1, remote_rtcp, True, receive))

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
