"""Call control driven through the endpoint without SIP sockets: the real B2BUA, its real
asyncio adapter (`CallIo`), and a resolver that answers from a list instead of DNS. With
the messages a caller and a callee send, and a phone's media socket."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from gateway.calls.b2bua import B2bua
from gateway.calls.call import Call
from gateway.calls.cdr import CdrStore
from gateway.calls.registrar import Registrar
from gateway.calls.settings import CallLimits, CallSettings, Local
from gateway.config.load import parse_text
from gateway.daemon.call_io import CallIo
from gateway.resolver.rfc3263 import ResolveError, Target, TargetResolver
from gateway.sip.endpoint import Endpoint, EndpointSettings
from gateway.sip.message import Message, Request, Response, make_response
from gateway.sip.parse import parse_message
from gateway.sip.transaction_layer import Event
from gateway.sip.transaction_machines import Send
from gateway.sip.uri import SipUri
from gateway.transport.peer import Peer, Transport
from ice.ports import PortAllocator
from routing.engine import Router
from sdp.model import SessionDescription
from sdp.parse import parse_sdp
from tests.kit.lync import LyncStream
from tests.kit.video import frames, lync_frames, lync_packets, paced

CALLER = Peer("UDP", "192.0.2.10", 5062)
FIRST = Target("UDP", "uas.example.com", "198.51.100.1", 5060)
SECOND = Target("UDP", "uas.example.com", "198.51.100.2", 5060)
RULES = """
[[routing_rules]]
name = "to endpoints"
priority = 10
protocols = ["sip", "mssip"]
match = '(.+)@gw\\.example\\.com'
replace = '\\1@uas.example.com'
"""




class FakeResolver:
    """Every name resolves to `targets` (None: to nothing), after a wait as DNS would."""

    def __init__(self, targets: list[Target] | None) -> None:
        self.targets = targets
        self.asked: list[tuple[str, bool]] = []  # (host, federation) of each look-up

    def resolve_now(self, uri: SipUri) -> list[Target] | None:
        return None  # as for a name: the look-up is waited for, as DNS would be

    async def resolve(self, uri: SipUri, *, federation: bool = False) -> list[Target]:
        self.asked.append((uri.host, federation))
        if self.targets is None:
            raise ResolveError(f"{uri.host}: no NAPTR, SRV or A/AAAA records")
        return list(self.targets)


class Harness:
    def __init__(self, targets: list[Target] | None, cdrs: CdrStore | None = None,
                 limits: CallLimits | None = None, ports: PortAllocator | None = None,
                 address: str = "203.0.113.5", registrar: Registrar | None = None,
                 rules: str = RULES) -> None:
        config = parse_text(rules, "t.toml", base_dir=None)
        router = Router(config.services, config.routing_rules)
        self.out: list[Send] = []
        self.cdrs, self.registrar = cdrs, registrar
        self.resolver: TargetResolver = FakeResolver(targets)
        self.b2bua = B2bua(CallSettings(router=router, limits=limits or CallLimits()),
                           local=Local(address, {Transport.UDP: 5060}),
                           resolver=self.resolver, media_ports=ports, registrar=registrar,
                           cdrs=cdrs, wall_clock=lambda: 1_700_000_000.0)
        self.ep = Endpoint(EndpointSettings(server="lyncgate/test"), handler=self.b2bua)
        self.now = 0.0  # call control's clock: what feed() and outcomes fed back are stamped
        self.io = CallIo(self.b2bua, self.ep, self.resolver, spawn=self.spawn,
                         deliver=self.collect, clock=lambda: self.now)
        self.tasks: list[asyncio.Future[None]] = []

    def configure(self, **changes: Any) -> None:
        """A new config generation for call control: the current settings, changed."""
        self.b2bua.configure(dataclasses.replace(self.b2bua.settings, **changes))

    def use_resolver(self, resolver: TargetResolver) -> None:
        self.resolver = self.io.resolver = self.b2bua.ctx.resolver = resolver

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        self.tasks.append(asyncio.ensure_future(work))

    def collect(self, events: list[Event]) -> None:
        self.out.extend(e for e in events if isinstance(e, Send))

    def feed(self, message: Message | bytes, peer: Peer, now: float | None = None) -> None:
        data = message if isinstance(message, bytes) else message.to_bytes()
        self.collect(self.ep.receive(data, peer, None, self.now if now is None else now))
        self.io.run()

    def tick(self, now: float) -> None:
        """Time passes to `now`: the core's timers due by then fire."""
        self.now = now
        self.collect(self.ep.handle_timeout(now))
        self.io.run()

    async def settle(self) -> None:
        for _ in range(5):
            await asyncio.sleep(0)

    async def ports_back(self, ports: PortAllocator, held: set[int]) -> None:
        """Settles until the media ports in use are `held` again (a stream declined or
        stopped gives its ports back once its ICE session has closed)."""
        for _ in range(20):
            await self.settle()
            if ports.in_use == held:
                return
        assert ports.in_use == held

    def take(self) -> list[tuple[Message, Peer]]:
        sent = [(parse_message(s.data), s.peer) for s in self.out]
        self.out.clear()
        return sent


def invite(user: str = "alice") -> bytes:
    return (
        f"INVITE sip:{user}@gw.example.com SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-in1;rport\r\n"
        "From: \"Bob\" <sip:bob@example.org>;tag=caller\r\n"
        f"To: <sip:{user}@gw.example.com>\r\nCall-ID: in-call-1\r\nCSeq: 1 INVITE\r\n"
        "Contact: <sip:bob@192.0.2.10:5062>\r\nMax-Forwards: 70\r\n"
        "Content-Type: application/sdp\r\nContent-Length: 10\r\n\r\nv=0\r\ns=x\r\n"
    ).encode()


def invite_with(body: bytes, user: str = "alice") -> bytes:
    """The caller's INVITE carrying `body` as its SDP."""
    return invite(user).replace(b"Content-Length: 10\r\n\r\nv=0\r\ns=x\r\n",
                                b"Content-Length: %d\r\n\r\n" % len(body) + body)


def statuses(sent: list[tuple[Message, Peer]], peer: Peer) -> list[int]:
    return [m.status for m, p in sent if isinstance(m, Response) and p == peer]


def outbound(sent: list[tuple[Message, Peer]], method: str) -> tuple[Request, Peer]:
    return next((m, p) for m, p in sent if isinstance(m, Request) and m.method == method)


def far(target: Target) -> Peer:
    return Peer(target.transport, target.address, target.port)




def sdp_body(port: int) -> bytes:
    return (f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 9\r\na=rtpmap:9 G722/8000\r\na=sendrecv\r\n").encode()


class Phone(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.got.put_nowait(data)

    def rtp(self) -> list[bytes]:
        """The RTP packets got so far (taken), RTCP left out."""
        packets = []
        while not self.got.empty():
            packet = self.got.get_nowait()
            if not 192 <= packet[1] <= 223:
                packets.append(packet)
        return packets


async def phone() -> tuple[asyncio.DatagramTransport, Phone, int]:
    transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
        Phone, local_addr=("127.0.0.1", 0))
    return transport, protocol, int(transport.get_extra_info("sockname")[1])


async def video_relayed(call: Call, frames: int) -> dict[str, Any]:
    """The counters of the call's translated video stream (the last one the relay joined:
    one removed before stays counted before it) once `frames` access units have gone out
    each way (and a moment for the last packets to land)."""
    assert call.media.relayed is not None
    for _ in range(500):
        stats = call.media.relayed.video_stats()[-1]
        if all(stats[way]["access_units_out"] >= frames  # type: ignore[index]
               for way in ("lync->sip", "sip->lync")):
            await asyncio.sleep(0.05)
            return stats
        await asyncio.sleep(0.01)
    raise AssertionError(f"video did not flow: {call.media.relayed.video_stats()}")


async def video_crosses(call: Call, at_lync: LyncStream, lync_ssrc: int,
                        phone_video: asyncio.DatagramTransport, phone_rx: Phone, to_port: int,
                        x264: tuple[Path, list[bytes]], tmp_path: Path) -> dict[str, Any]:
    """x264's packets sent by the phone (`phone_video`) to the relay's `to_port`, and as
    Lync's [MS-H264PF] under `lync_ssrc` from `at_lync`, cross the call's translated video
    stream: what Lync gets decodes (ffmpeg) to the source's frames, and so does what the
    phone gets (read under payload type 96, the judge's), none lost. (That stream's
    counters, `video_relayed`.)"""
    tmp, source = x264

    async def from_phone(packet: bytes) -> None:
        phone_video.sendto(packet, ("127.0.0.1", to_port))

    await asyncio.gather(paced(from_phone, source), paced(at_lync.send, lync_packets(
        source, ssrc=lync_ssrc, payload_type=122)))
    stats = await video_relayed(call, 60)
    expected = frames(tmp, source, "source")
    assert lync_frames(tmp_path, at_lync.rtp, "at_lync") == expected
    assert frames(tmp_path, [p[:1] + bytes([p[1] & 0x80 | 96]) + p[2:]
                             for p in phone_rx.rtp()], "at_phone") == expected
    return stats


def leg(call_id: str, from_tag: str, to_tag: object, via: str) -> dict[str, str]:
    """How `in_dialog` sends as one leg: its Call-ID and tag, ours, its Via."""
    return {"call_id": call_id, "from_tag": from_tag, "to_tag": str(to_tag), "via": via}


def in_dialog(method: str, cseq: int, body: bytes, *, call_id: str, from_tag: str,
              to_tag: str, via: str) -> bytes:
    """A request inside the call, from a leg identified by its Call-ID and tags."""
    return (f"{method} sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/{via};branch=z9hG4bK-{from_tag}"
            f"{cseq}\r\nFrom: <sip:a@example.com>;tag={from_tag}\r\n"
            f"To: <sip:b@example.com>;tag={to_tag}\r\nCall-ID: {call_id}\r\n"
            f"CSeq: {cseq} {method}\r\nMax-Forwards: 70\r\nContact: <sip:a@127.0.0.1>\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body


def answered_back(h: Harness, reinvite: Request, body: bytes, answerer: Peer, asker: Peer,
                  cseq: int) -> SessionDescription:
    """The leg our re-INVITE went to answers `body`: it is ACKed, and the leg that asked gets
    our 200 to its request `cseq`, whose SDP this returns."""
    h.feed(make_response(reinvite, 200, headers=(("Contact", "<sip:x@127.0.0.1>"),),
                         body=body, content_type="application/sdp"), answerer)
    sent = h.take()
    assert [m.method for m, _ in sent if isinstance(m, Request)] == ["ACK"]
    [back] = [m for m, p in sent if isinstance(m, Response) and p == asker]
    assert back.status == 200 and back.cseq.seq == cseq
    return parse_sdp(back.body)


def without_video(sdp: bytes, version: bytes) -> bytes:
    """`sdp` re-offered at o= `version` with its video stream rejected (port 0)."""
    return re.sub(rb"m=video \d+", b"m=video 0", re.sub(rb"(o=- \d+) \d+", rb"\1 " + version,
                                                      sdp, count=1))


async def reoffered(h: Harness, cseq: int, body: bytes, sender: dict[str, str], peer: Peer,
                    toward: str) -> tuple[Request, SessionDescription]:
    """A leg (`sender`, at `peer`) re-INVITEs with `body`, an offer the gateway takes to
    the other leg: our re-INVITE there (of Call-ID `toward`), once sent, and its SDP."""
    h.feed(in_dialog("INVITE", cseq, body, **sender), peer)
    reinvite = await our_reinvite(h)
    assert reinvite.call_id == toward
    return reinvite, parse_sdp(reinvite.body)


async def our_reinvite(h: Harness) -> Request:
    """The re-INVITE the gateway sends once ICE has gathered for an added stream."""
    for _ in range(50):
        await h.settle()
        sent = [m for m, _ in h.take() if isinstance(m, Request) and m.method == "INVITE"]
        if sent:
            [reinvite] = sent
            return reinvite
        await asyncio.sleep(0.01)
    raise AssertionError("no re-INVITE")
