"""What Lync-side tests need around the gateway: a STUN server, a TURN server that never
answers, port allocation that can be held mid-way, Lync's offer, and Lync's end of a stream
once ICE is up (SRTP both ways, with libsrtp)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import aioice
from aioice import stun

from gateway.transport.peer import Peer
from ice.candidate import Candidate, parse_candidate
from ice.ports import PortAllocator
from ice.session import TurnSettings
from sdp.model import Media
from sdp.parse import parse_sdp
from tests.kit.media import far_end
from tests.kit.nice import NiceAgent


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


# A Lync endpoint's ICE agent: aioice, or libnice behind aioice's face (tests/kit/nice.py).
Agent = aioice.Connection | NiceAgent


# A Lync client on loopback: an aioice agent in the controlling role, and the INVITE Lync
# sends with its multipart offer (the draft-6 fallback and the RFC 5245 part).
LYNC = Peer("TLS", "127.0.0.1", 5061, connection=3)
BOUNDARY = "lyncboundary"


# Lync 2013's video stream as it offers it: X-H264UC, RTVideo and FEC, what it receives
# for RTVideo (x-caps), the SSRCs it sends with, source requests and PLI both ways.
LYNC_VIDEO_SSRCS = (2032261889, 2032261988)
LYNC_XCAPS = ("121 263:1920:1080:30.0:2000000:1;4359:1280:720:30.0:1500000:1;"
              "8455:640:480:30.0:600000:1;12551:640:360:30.0:600000:1;"
              "16647:352:288:15.0:250000:1;20743:424:240:15.0:250000:1;"
              "24839:176:144:15.0:180000:1")


def lync_video(agent: Agent, key: bytes, *, rtvc1_only: bool = False) -> str:
    """The m=video section of Lync's RFC 5245 part (`rtvc1_only`: as Lync 2010 offers,
    RTVideo alone)."""
    formats = "121 123" if rtvc1_only else "122 121 123"
    h264uc = "" if rtvc1_only else ("a=rtpmap:122 X-H264UC/90000\r\n"
                                    "a=fmtp:122 packetization-mode=1;mst-mode=NI-TC\r\n")
    return (f"m=video {agent.local_candidates[0].port} RTP/SAVP {formats}\r\n"
            f"a=x-ssrc-range:{LYNC_VIDEO_SSRCS[0]}-{LYNC_VIDEO_SSRCS[1]}\r\n"
            "a=rtcp-fb:* x-message app send:src,x-pli recv:src,x-pli\r\na=rtcp-rsize\r\n"
            "a=label:main-video\r\na=x-source:main-video\r\n"
            f"a=ice-ufrag:{agent.local_username}\r\na=ice-pwd:{agent.local_password}\r\n"
            f"{_candidates(agent)}a=rtcp-mux\r\n"
            f"a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{base64.b64encode(key).decode()}"
            f"|2^31\r\na=x-caps:{LYNC_XCAPS}\r\n{h264uc}"
            "a=rtpmap:121 x-rtvc1/90000\r\na=rtpmap:123 x-ulpfecuc/90000\r\n")


def _candidates(agent: Agent) -> str:
    return "".join(f"a={Candidate.from_aioice(c).attribute()}\r\n"
                   for c in agent.local_candidates)


def lync_offer(agent: Agent, key: bytes, video: str = "") -> bytes:
    """Lync's multipart offer: audio on `agent`, then `video` (lync_video), then
    application sharing."""
    candidates = _candidates(agent)
    port = agent.local_candidates[0].port
    rfc5245 = (
        "v=0\r\no=- 0 1 IN IP4 127.0.0.1\r\ns=session\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/SAVP 9 0 101\r\n"
        f"a=ice-ufrag:{agent.local_username}\r\na=ice-pwd:{agent.local_password}\r\n"
        f"{candidates}a=rtcp-mux\r\n"
        f"a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{base64.b64encode(key).decode()}|2^31\r\n"
        "a=label:main-audio\r\na=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\n"
        f"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n{video}"
        "m=applicationsharing 5398 TCP/RTP/SAVP 127\r\na=rtpmap:127 x-data/90000\r\n")
    fallback = ("v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=session\r\nc=IN IP4 127.0.0.1\r\n"
                f"t=0 0\r\nm=audio {port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
    return (f"--{BOUNDARY}\r\nContent-Type: application/sdp\r\nContent-Disposition: session; "
            f"handling=optional; ms-proxy-2007fallback\r\n\r\n{fallback}\r\n"
            f"--{BOUNDARY}\r\nContent-Type: application/sdp\r\nContent-Disposition: session; "
            f"handling=optional\r\n\r\n{rfc5245}\r\n--{BOUNDARY}--\r\n").encode()


def invite(body: bytes) -> bytes:
    return (
        "INVITE sip:alice@gw.example.com SIP/2.0\r\n"
        "Via: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bK-lync1\r\n"
        "From: \"Bob\" <sip:bob@example.com>;tag=lync\r\nTo: <sip:alice@gw.example.com>\r\n"
        "Call-ID: lync-call-1\r\nCSeq: 1 INVITE\r\n"
        "Contact: <sip:bob@example.com;opaque=user:epid:x;gruu>\r\n"
        "Ms-Conversation-ID: AdWy9f3h1yF2cNbzQ8KyK3u7bD2a0Q==\r\nMax-Forwards: 70\r\n"
        f"Content-Type: multipart/alternative;boundary={BOUNDARY}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


class LyncStream:
    """Lync's end of one stream once ICE has connected `agent`: sends protected with Lync's
    `key`, and keeps what it gets (unprotected with `ours`, the key our SDP gave it), RTP
    and RTCP apart, until `close`."""

    def __init__(self, agent: Agent, key: bytes, ours: Media) -> None:
        self.agent = agent
        self._tx = far_end(key, True)
        self._rx = far_end(base64.b64decode(ours.cryptos()[0].key), False)
        self.rtp: list[bytes] = []
        self.rtcp: list[bytes] = []
        self._task = asyncio.ensure_future(self._receive())

    async def _receive(self) -> None:
        while True:
            data = await self.agent.recv()
            if 192 <= data[1] <= 223:
                self.rtcp.append(self._rx.unprotect_rtcp(data))
            else:
                self.rtp.append(self._rx.unprotect(data))

    async def send(self, packet: bytes) -> None:
        await self.agent.send(self._tx.protect_rtcp(packet) if 192 <= packet[1] <= 223
                              else self._tx.protect(packet))

    async def close(self) -> None:
        self._task.cancel()
        await self.agent.close()


def audio_answer(agent: Agent, key: bytes, formats: str = "9",
                 rtpmaps: str = "a=rtpmap:9 G722/8000\r\n") -> bytes:
    """A Lync endpoint's (or A/V MCU's) SDP answer: one audio stream on `agent`, SRTP with
    `key`, rtcp-mux."""
    return (f"v=0\r\no=- 0 1 IN IP4 127.0.0.1\r\ns=session\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {agent.local_candidates[0].port} RTP/SAVP {formats}\r\n"
            f"a=ice-ufrag:{agent.local_username}\r\na=ice-pwd:{agent.local_password}\r\n"
            f"{_candidates(agent)}a=rtcp-mux\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"
            f"{base64.b64encode(key).decode()}|2^31\r\n{rtpmaps}").encode()


async def connect_to_offer(agent: Agent, offer: bytes) -> Media:
    """ICE from a Lync endpoint's `agent` (controlled) against the first stream of the
    gateway's `offer`, until a pair is selected; that stream is returned."""
    offered = parse_sdp(offer).media[0]
    agent.remote_username = offered.attribute("ice-ufrag")
    agent.remote_password = offered.attribute("ice-pwd")
    for value in offered.attributes("candidate"):
        await agent.add_remote_candidate(parse_candidate(value).to_aioice())
    await agent.add_remote_candidate(None)
    await asyncio.wait_for(agent.connect(), 10)
    return offered
