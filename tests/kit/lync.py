"""What Lync-side tests need around the gateway: a STUN server, a TURN server that never
answers, and port allocation that can be held mid-way."""

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
from ice.candidate import Candidate
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


# A Lync client on loopback: an aioice agent in the controlling role, and the INVITE Lync
# sends with its multipart offer (the draft-6 fallback and the RFC 5245 part).
LYNC = Peer("TLS", "127.0.0.1", 5061, connection=3)
BOUNDARY = "lyncboundary"


def lync_offer(agent: aioice.Connection, key: bytes) -> bytes:
    candidates = "".join(f"a={Candidate.from_aioice(c).attribute()}\r\n"
                         for c in agent.local_candidates)
    port = agent.local_candidates[0].port
    rfc5245 = (
        "v=0\r\no=- 0 1 IN IP4 127.0.0.1\r\ns=session\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/SAVP 9 0 101\r\n"
        f"a=ice-ufrag:{agent.local_username}\r\na=ice-pwd:{agent.local_password}\r\n"
        f"{candidates}a=rtcp-mux\r\n"
        f"a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{base64.b64encode(key).decode()}|2^31\r\n"
        "a=label:main-audio\r\na=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"
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
