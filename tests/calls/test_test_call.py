"""The Test Call Service answered by the node itself (the default config's `test-call`):
the caller's offer answered with its codecs toward the node, its RTP looped back under
another SSRC (RTCP not), the call hung up when its time is over; refused 488 with the
reason for what it cannot loop (ICE, SRTP, no offer)."""

from __future__ import annotations

import asyncio
import struct

from gateway.config.load import load_default
from gateway.sip.message import Request, Response
from ice.ports import PortAllocator
from routing.engine import Router
from sdp.parse import parse_sdp
from tests.kit.calls import CALLER, Harness, invite, invite_with, phone, sdp_body, statuses
from tests.kit.media import rtcp_sr, rtp
from tests.peers import free_port


def to_test_call(body: bytes, domain: str = "example.org") -> bytes:
    return invite_with(body).replace(b"alice@gw.example.com", b"test-call@" + domain.encode())


def harness() -> tuple[Harness, PortAllocator]:
    """The embedded default config's services, as a node runs them."""
    config = load_default()
    base = free_port()
    ports = PortAllocator(base, base + 20)
    h = Harness(None, ports=ports, address="127.0.0.1")
    h.configure(router=Router(config.services, config.routing_rules))
    return h, ports


async def test_the_test_call_answers_and_loops_rtp_back_then_hangs_up() -> None:
    h, ports = harness()
    sock, got, port = await phone()
    h.now = asyncio.get_running_loop().time()
    h.feed(to_test_call(sdp_body(port).replace(b"a=sendrecv", b"a=sendonly"), "any.test"),
           CALLER)
    await h.settle()
    sent = h.take()
    assert statuses(sent, CALLER) == [100, 200]
    ok = next(m for m, _ in sent if isinstance(m, Response) and m.status == 200)
    assert ok.headers.get("Content-Type") == "application/sdp" and ok.to.tag
    answer = parse_sdp(ok.body)
    audio = answer.media[0]
    assert answer.connection_address(audio) == "127.0.0.1" and audio.formats == ["9"]
    assert audio.direction == "recvonly"  # the mirror of the caller's sendonly
    assert ports.first <= audio.port <= ports.last
    sock.sendto(rtp(1, pt=9, ssrc=0x1234), ("127.0.0.1", audio.port))
    back = await asyncio.wait_for(got.got.get(), 5)
    assert back[:8] == rtp(1, pt=9)[:8] and back[12:] == rtp(1, pt=9)[12:]
    assert struct.unpack("!I", back[8:12])[0] != 0x1234  # an SSRC of its own
    sock.sendto(rtcp_sr(0x1234), ("127.0.0.1", audio.port + 1))
    sock.sendto(rtp(2, pt=9, ssrc=0x1234), ("127.0.0.1", audio.port))
    assert (await asyncio.wait_for(got.got.get(), 5))[2:4] == b"\x00\x02"  # RTCP not looped
    [call] = h.b2bua.calls.values()
    assert call.media.relayed is not None
    h.tick(h.now + 29.0)
    assert not [m for m, _ in h.take() if isinstance(m, Request)]
    h.tick(h.now + 2.0)
    [bye] = [m for m, _ in h.take() if isinstance(m, Request)]
    assert bye.method == "BYE" and "test call over after 30 s" in (bye.headers.get("Reason") or "")
    assert h.b2bua.calls == {}
    assert ports.in_use == set()
    sock.close()


async def test_the_test_call_refuses_what_it_cannot_loop() -> None:
    h, ports = harness()
    savp = sdp_body(5004).replace(b"RTP/AVP", b"RTP/SAVP")
    h.feed(to_test_call(savp), CALLER)
    await h.settle()
    sent = h.take()
    assert statuses(sent, CALLER) == [100, 488]
    refused = next(m for m, _ in sent if isinstance(m, Response) and m.status == 488)
    assert "plain RTP only" in refused.reason
    h.feed(invite().replace(b"alice@gw.example.com", b"test-call@example.org").replace(
        b"Content-Type: application/sdp\r\nContent-Length: 10\r\n\r\nv=0\r\ns=x\r\n",
        b"Content-Length: 0\r\n\r\n").replace(b"in-call-1", b"in-call-2"), CALLER)
    await h.settle()
    assert 488 in statuses(h.take(), CALLER)
    assert h.b2bua.calls == {} and ports.in_use == set()
