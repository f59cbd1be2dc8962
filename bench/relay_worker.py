"""lyncgate's media relay as its own process for bench/relay.py: for each JSON line
{"streams": [{"key": base64 or null, "sink": port}, ...]} on stdin, closes the streams of the
line before (their ports go back: the bench's rounds would use up the range otherwise, and
two workers share it), relays each stream from an inbound port (SRTP unprotected when a key
is given) to 127.0.0.1:sink as plain RTP and prints {"ports": [...], "translator": how the
video translator runs}; runs until stdin closes. uvloop when installed, as the daemon.

A stream with "video": "lync" or "sip" is one direction of a video call, its Lync side
SRTP with the key: from Lync (SRTP in, RTP to the sink) or from the SIP side (RTP in, SRTP
to the sink); with "translate": true through the translating VideoRelay (X-H264UC <->
H264), else through the plain relay.

The process is tuned as `lyncgate run` tunes the daemon once it has started (its garbage
collector and thread switch interval, gateway.daemon.command's own functions), so that the
relays run here as they do there. Left at Python's defaults (the young generation collected
every 700 allocations, full collections over the whole heap) the collector took ~1% of the
translating relay's CPU under bench/relay.py --video (perf), tuned next to none."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]

from gateway import logs  # noqa: E402
from gateway.daemon.command import tune_gc, tune_threads  # noqa: E402
from gateway.media import TRANSLATOR_BUILD  # noqa: E402
from gateway.media.endpoints import Receive, SipMedia  # noqa: E402
from gateway.media.relay import Side, StreamRelay  # noqa: E402
from gateway.media.srtp import SrtpContext  # noqa: E402
from gateway.media.video_plan import SipVideoLimits, VideoPlan  # noqa: E402
from gateway.media.video_relay import VideoRelay  # noqa: E402
from ice.ports import PortAllocator  # noqa: E402
from sdp.attributes import Crypto  # noqa: E402

# What bench/relay.py's video streams carry: X-H264UC as 122 and H264 as 96, 720p30 limits.
VIDEO_PLAN = VideoPlan(122, 96, SipVideoLimits(1280, 720, 30.0, 1_500_000))


async def main() -> None:
    logs.configure(json=True, level="warning")  # stdout carries the port lists
    loop = asyncio.get_running_loop()
    ports = PortAllocator(42000, 43999)
    relays: list[StreamRelay] = []
    media: list[SipMedia] = []
    tune_gc()
    tune_threads()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        for each in media:
            each.close(ports)
        media.clear()
        relays.clear()
        add_streams(json.loads(line), ports, relays, media, loop)


def _to_relay(relays: list[StreamRelay], index: int, *, lync_side: bool) -> Receive:
    """The relay is made after both sides' sockets (it needs their send methods), so the
    socket's callback finds it by index when packets come."""
    def receive(packet: bytes, rtcp: bool | None) -> None:
        relay = relays[index]
        (relay.from_a if lync_side else relay.from_b)(packet, rtcp)
    return receive


def add_streams(spec: dict[str, list[dict[str, object]]], ports: PortAllocator,
                relays: list[StreamRelay], media: list[SipMedia],
                loop: asyncio.AbstractEventLoop) -> None:
    ports_out = []
    for stream in spec["streams"]:
        srtp = None
        if stream["key"]:
            srtp = Crypto(1, "AES_CM_128_HMAC_SHA1_80", f"inline:{stream['key']}")
        sink = int(str(stream["sink"]))
        index = len(relays)
        video = stream.get("video")
        from_lync = video != "sip"
        inbound = SipMedia.open(ports, "127.0.0.1", ("127.0.0.1", 9), None,
                                _to_relay(relays, index, lync_side=from_lync))
        outbound = SipMedia.open(ports, "127.0.0.1", ("127.0.0.1", sink), None,
                                 _to_relay(relays, index, lync_side=not from_lync))
        media += (inbound, outbound)
        if from_lync:
            lync = Side("lync", inbound.send,
                        srtp_in=SrtpContext(srtp, inbound=True) if srtp else None)
            sip = Side("sip", outbound.send)
        else:
            lync = Side("lync", outbound.send,
                        srtp_out=SrtpContext(srtp, inbound=False) if srtp else None)
            sip = Side("sip", inbound.send)
        if video and stream.get("translate"):
            relays.append(VideoRelay(lync, sip, VIDEO_PLAN, clock=loop.time))
        else:
            relays.append(StreamRelay(str(video or "audio"), lync, sip, clock=loop.time))
        ports_out.append(inbound.rtp.port)
    print(json.dumps({"ports": ports_out, "translator": TRANSLATOR_BUILD.why}), flush=True)

if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
