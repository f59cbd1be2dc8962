"""Media the node sends back to where it came from: the Test Call Service's loop. Each
stream has one endpoint toward the caller; what arrives goes through the relay core
(checked and counted like any relayed packet) and out again under an SSRC of ours, since a
receiver that saw its own SSRC come back would take it for a loop or a collision (RFC 3550
8.2). RTCP is counted and not returned: reports about the caller's own stream would be
nonsense to it."""

from __future__ import annotations

import asyncio
import os

from gateway.media.call import CallMedia
from gateway.media.endpoints import Receive, SipMedia
from gateway.media.relay import Send, Side, StreamRelay
from ice.ports import PortAllocator
from sdp.anchor import Remote


class Echo:
    def __init__(self, ports: PortAllocator) -> None:
        self.ports = ports
        self.endpoints: list[SipMedia] = []
        self._relays: list[StreamRelay] = []
        self.media: CallMedia | None = None

    def reserve(self, host: str, muxed: list[bool]) -> list[int]:
        """A port toward the caller for each stream (RTCP on the next unless muxed)."""
        unknown = ("0.0.0.0", 9)
        try:
            for index, mux in enumerate(muxed):
                self.endpoints.append(SipMedia.open(self.ports, host, unknown,
                                                    None if mux else unknown,
                                                    self._into(index)))
        except BaseException:
            self.close()
            raise
        return [e.rtp.port for e in self.endpoints]

    def connect(self, media: list[str], remotes: list[Remote | None],
                timeout: float) -> CallMedia:
        """Start looping each stream back; until the caller's first packet latches its
        address, it is the one its SDP gave."""
        loop = asyncio.get_running_loop()
        for index, (kind, remote) in enumerate(zip(media, remotes, strict=True)):
            endpoint = self.endpoints[index]
            if remote is not None:
                endpoint.rtp.point_at(remote.rtp)
                if endpoint.rtcp_endpoint is not None:
                    endpoint.rtcp_endpoint.point_at(remote.rtcp)
            self._relays.append(StreamRelay(kind, Side("caller", endpoint.send),
                                            Side("echo", _back(endpoint)), clock=loop.time))
        self.media = CallMedia(self._relays, timeout=timeout)
        return self.media

    def _into(self, index: int) -> Receive:
        def receive(data: bytes, rtcp: bool | None) -> None:
            if index < len(self._relays):  # before connect() nothing is looped
                self._relays[index].from_a(data, rtcp)

        return receive

    def close(self) -> None:
        for endpoint in self.endpoints:
            endpoint.close(self.ports)
        self.endpoints.clear()


def _back(endpoint: SipMedia) -> Send:
    ssrc = os.urandom(4)

    def send(packet: bytes, rtcp: bool) -> None:
        if not rtcp:
            endpoint.send(packet[:8] + ssrc + packet[12:], False)

    return send
