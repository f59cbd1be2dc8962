"""lyncgate's media relay as its own process for bench/relay.py: for each JSON line
{"streams": [{"key": base64 or null, "sink": port}, ...]} on stdin, relays each stream from
an inbound port (SRTP unprotected when a key is given) to 127.0.0.1:sink as plain RTP and
prints {"ports": [...]}; runs until stdin closes. uvloop when installed, as the daemon."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]

from gateway import logs  # noqa: E402
from gateway.media.endpoints import Receive, SipMedia  # noqa: E402
from gateway.media.relay import Side, StreamRelay  # noqa: E402
from gateway.media.srtp import SrtpContext  # noqa: E402
from ice.ports import PortAllocator  # noqa: E402
from sdp.attributes import Crypto  # noqa: E402


async def main() -> None:
    logs.configure(json=True, level="warning")  # stdout carries the port lists
    loop = asyncio.get_running_loop()
    ports = PortAllocator(42000, 43999)
    relays: list[StreamRelay] = []
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        add_streams(json.loads(line), ports, relays, loop)


def _to_relay(relays: list[StreamRelay], index: int, *, lync_side: bool) -> Receive:
    """The relay is made after both sides' sockets (it needs their send methods), so the
    socket's callback finds it by index when packets come."""
    def receive(packet: bytes, rtcp: bool | None) -> None:
        relay = relays[index]
        (relay.from_a if lync_side else relay.from_b)(packet, rtcp)
    return receive


def add_streams(spec: dict[str, list[dict[str, object]]], ports: PortAllocator,
                      relays: list[StreamRelay], loop: asyncio.AbstractEventLoop) -> None:
    ports_out = []
    for stream in spec["streams"]:
        srtp = None
        if stream["key"]:
            srtp = SrtpContext(Crypto(1, "AES_CM_128_HMAC_SHA1_80", f"inline:{stream['key']}"),
                               inbound=True)
        sink = int(str(stream["sink"]))
        index = len(relays)
        inbound = SipMedia.open(ports, "127.0.0.1", ("127.0.0.1", 9), None,
                                _to_relay(relays, index, lync_side=True))
        outbound = SipMedia.open(ports, "127.0.0.1", ("127.0.0.1", sink), None,
                                 _to_relay(relays, index, lync_side=False))
        relays.append(StreamRelay("audio", Side("lync", inbound.send, srtp_in=srtp),
                                  Side("sip", outbound.send), clock=loop.time))
        ports_out.append(inbound.rtp.port)
    print(json.dumps({"ports": ports_out}), flush=True)


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
