"""The relay on real loopback sockets: a Lync-like peer behind ICE sending SRTP (rtcp-mux) and
a SIP endpoint sending plain RTP from another port than its SDP says (latching), with
payload-type remapping, both ways; the SIP side with separate RTP/RTCP ports, bound as an
even port and the next, and RTCP sent where the peer's a=rtcp says."""

from __future__ import annotations

import asyncio
import socket

import aioice
import pytest

from gateway.media.backend import BuiltinRelay, SipBridge, StreamPlan
from gateway.media.endpoints import SipMedia
from ice.candidate import Candidate
from ice.ports import PortAllocator
from ice.session import IceSession
from sdp.anchor import remote_addresses
from sdp.parse import parse_sdp
from tests.kit.media import crypto, far_end, rtcp_sr, rtp
from tests.peers import free_port


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6:
                        ["127.0.0.1"])


class Endpoint(asyncio.DatagramProtocol):
    """A SIP endpoint's media socket."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait(data)


async def endpoint_socket() -> tuple[asyncio.DatagramTransport, Endpoint, int]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(Endpoint,
                                                              local_addr=("127.0.0.1", 0))
    return transport, protocol, int(transport.get_extra_info("sockname")[1])


async def test_lync_srtp_over_ice_to_sip_rtp_with_latching_and_remap() -> None:
    base = free_port()
    ports = PortAllocator(base, base + 20)
    # Lync side: ICE with one component (rtcp-mux), SRTP both ways.
    ours = IceSession(controlling=False, components=1, address="127.0.0.1", ports=ports)
    await ours.gather()
    lync = aioice.Connection(ice_controlling=True, components=1, use_ipv6=False)
    await lync.gather_candidates()
    await ours.set_remote(lync.local_username, lync.local_password,
                          [Candidate.from_aioice(c).attribute() for c in lync.local_candidates])
    lync.remote_username, lync.remote_password = ours.ufrag, ours.pwd
    for c in ours.local_candidates():
        await lync.add_remote_candidate(c.to_aioice())
    await lync.add_remote_candidate(None)
    await asyncio.gather(ours.connect(5), lync.connect())
    their_crypto, their_key = crypto(mki=True)
    our_crypto, our_key = crypto(mki=True)
    lync_tx, lync_rx = far_end(their_key, True), far_end(our_key, False)

    # SIP side: the SDP says port `sdp_port`, packets really come from `real_port`.
    sdp_port = free_port()
    phone, phone_rx, real_port = await endpoint_socket()
    backend = BuiltinRelay(ports)
    [sip_port] = await backend.reserve("127.0.0.1", 1, rtcp_mux=True)
    media = backend.connect([StreamPlan(
        "audio", ours, ("127.0.0.1", sdp_port), None, lync_key_in=their_crypto,
        lync_key_out=our_crypto, lync_pt_map={109: 9}, sip_pt_map={9: 109})], timeout=30)

    phone.sendto(rtp(1, pt=109, ssrc=7), ("127.0.0.1", sip_port))  # latches
    data = await asyncio.wait_for(lync.recv(), 5)
    assert lync_rx.unprotect(data[:-11] + data[-10:]) == rtp(1, pt=9, ssrc=7)  # MKI removed

    protected = lync_tx.protect(rtp(5, pt=9, ssrc=99))
    await lync.send(protected[:-10] + b"\x01" + protected[-10:])
    assert await asyncio.wait_for(phone_rx.received.get(), 5) == rtp(5, pt=109, ssrc=99)
    sr = lync_tx.protect_rtcp(rtcp_sr(99))
    await lync.send(sr[:-10] + b"\x01" + sr[-10:])
    assert await asyncio.wait_for(phone_rx.received.get(), 5) == rtcp_sr(99)
    assert real_port != sdp_port  # so the phone got them only because the relay latched
    counters = media.counters()["audio"]
    assert counters["lync->sip"]["packets"] == 1 and counters["lync->sip"]["rtcp_packets"] == 1
    assert counters["sip->lync"]["packets"] == 1
    assert media.expired(asyncio.get_running_loop().time()) is None  # not silent: no timeout

    phone.close()
    backend.close()
    await lync.close()
    await ours.close()
    assert ports.in_use == set()


async def test_separate_rtcp_port_and_a_stray_source_after_latching() -> None:
    base = free_port()
    ports = PortAllocator(base, base + 10)
    got: list[tuple[bytes, bool | None]] = []
    phone, phone_rx, phone_port = await endpoint_socket()
    sip = SipMedia.open(ports, "127.0.0.1", ("127.0.0.1", phone_port),
                        ("127.0.0.1", phone_port + 1), lambda d, r: got.append((d, r)))
    assert sip.rtcp_endpoint is not None
    phone.sendto(rtp(1), ("127.0.0.1", sip.rtp.port))
    phone.sendto(rtcp_sr(), ("127.0.0.1", sip.rtcp_endpoint.port))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stray:
        stray.sendto(rtp(2), ("127.0.0.1", sip.rtp.port))  # someone else, right after
        for _ in range(50):
            if len(got) == 2 and sip.rtp.foreign == 1:
                break
            await asyncio.sleep(0.01)
    assert got == [(rtp(1), False), (rtcp_sr(), True)]
    assert sip.rtp.foreign == 1  # not relayed, not latched
    sip.send(rtp(3), rtcp=False)
    assert await asyncio.wait_for(phone_rx.received.get(), 5) == rtp(3)
    phone.close()
    sip.close(ports)


async def test_a_call_without_media_times_out_with_the_reason() -> None:
    base = free_port()
    ports = PortAllocator(base, base + 10)
    session = IceSession(controlling=True, components=1, address="127.0.0.1", ports=ports)
    await session.gather()
    backend = BuiltinRelay(ports)
    await backend.reserve("127.0.0.1", 1, rtcp_mux=False)
    media = backend.connect([StreamPlan("audio", session, ("127.0.0.1", free_port()))],
                            timeout=0.3)
    loop = asyncio.get_running_loop()
    assert media.expired(loop.time()) is None  # the relay's clock is the loop's
    await asyncio.sleep(0.35)
    reason = media.expired(loop.time())
    assert reason is not None and reason.startswith("media timeout: no packets for 0.3 s (audio ")
    backend.close()
    await session.close()
    assert ports.in_use == set()


async def test_sip_side_rtcp_is_on_the_port_after_an_even_rtp_port() -> None:
    """The SDP toward a SIP endpoint has no a=rtcp, which means RTCP on RTP + 1 (RFC 3550
    11): the relay binds exactly that pair, even when the port after the next free one is
    someone else's, for a Lync call's SIP side and for both sides of a SIP-to-SIP bridge."""
    base = free_port() // 2 * 2
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
        held.bind(("127.0.0.1", base + 1))
        ports = PortAllocator(base, base + 11)
        relay = BuiltinRelay(ports)
        [rtp_port] = await relay.reserve("127.0.0.1", 1, rtcp_mux=False)
        bridge = SipBridge(ports)
        caller, callee = bridge.reserve("127.0.0.1", [False])
        endpoints = [relay._sip[0], bridge.caller[0], bridge.callee[0]]
        assert [e.rtp.port for e in endpoints] == [rtp_port, *caller, *callee]
        for endpoint in endpoints:
            assert endpoint.rtp.port % 2 == 0 and endpoint.rtcp_endpoint is not None
            assert endpoint.rtcp_endpoint.port == endpoint.rtp.port + 1
        assert rtp_port == base + 2  # base + 1 is held: base is no RTP port
        relay.close()
        bridge.close()
    assert ports.in_use == set()


async def test_bridge_sends_rtcp_where_the_peers_a_rtcp_says() -> None:
    """RFC 3605: a peer that states a=rtcp gets its RTCP there, on connect and after a
    re-offer moves it; without a=rtcp, on its RTP port + 1."""
    base = free_port()
    ports = PortAllocator(base, base + 20)
    rtcp_at, rtcp_rx, rtcp_port = await endpoint_socket()
    moved_to, moved_rx, moved_port = await endpoint_socket()

    def sdp(rtp_port: int, rtcp: str = "") -> str:
        return (f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                f"m=audio {rtp_port} RTP/AVP 0\r\n{rtcp}")

    bridge = SipBridge(ports)
    toward_caller, _ = bridge.reserve("127.0.0.1", [False])
    bridge.connect(["audio"], remote_addresses(parse_sdp(sdp(free_port()))),
                   remote_addresses(parse_sdp(sdp(free_port(), f"a=rtcp:{rtcp_port}\r\n"))),
                   timeout=0)
    caller_rtcp = bridge.caller[0].rtcp_endpoint
    assert caller_rtcp is not None and caller_rtcp.port == toward_caller[0] + 1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
        caller.sendto(rtcp_sr(1), ("127.0.0.1", caller_rtcp.port))
        assert await asyncio.wait_for(rtcp_rx.received.get(), 5) == rtcp_sr(1)
        bridge.repoint(caller_side=False, remotes=remote_addresses(parse_sdp(sdp(
            free_port(), f"a=rtcp:{moved_port} IN IP4 127.0.0.1\r\n"))))
        caller.sendto(rtcp_sr(2), ("127.0.0.1", caller_rtcp.port))
        assert await asyncio.wait_for(moved_rx.received.get(), 5) == rtcp_sr(2)
    bridge.repoint(caller_side=True, remotes=remote_addresses(parse_sdp(sdp(5004))))
    assert caller_rtcp.remote == ("127.0.0.1", 5005)
    bridge.close()
    rtcp_at.close()
    moved_to.close()
