"""ICE sessions against real agents on loopback: aioice as the peer, libnice (an independent
implementation) in RFC 5245 and Microsoft OC2007R2 modes, and relay candidates through
coturn, including the failure a wrong TURN password gives."""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aioice
import pytest
from aioice import stun

from ice.candidate import Candidate
from ice.errors import IceError, PortsExhausted
from ice.msice2 import resign, signed_form, username_padding
from ice.ports import PortAllocator
from ice.session import IceSession, TurnSettings
from tests.kit.nice import NiceAgent
from tests.peers import coturn, free_port


def allocator(size: int = 20) -> PortAllocator:
    base = free_port()
    return PortAllocator(base, base + size)


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """aioice gathers on every interface but loopback; tests talk over loopback only."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6:
                        ["127.0.0.1"])


async def aioice_peer(controlling: bool) -> aioice.Connection:
    peer = aioice.Connection(ice_controlling=controlling, use_ipv6=False)
    await peer.gather_candidates()
    return peer


def loopback_attributes(peer: aioice.Connection) -> list[str]:
    return [Candidate.from_aioice(c).attribute() for c in peer.local_candidates
            if c.host == "127.0.0.1" or c.type == "relay"]


async def feed(peer: aioice.Connection, session: IceSession) -> None:
    peer.remote_username, peer.remote_password = session.ufrag, session.pwd
    for c in session.local_candidates():
        await peer.add_remote_candidate(c.to_aioice())
    await peer.add_remote_candidate(None)


@pytest.mark.parametrize("controlling", [True, False])
async def test_session_and_aioice_select_a_pair_and_carry_data(controlling: bool) -> None:
    ports = allocator()
    session = IceSession(controlling=controlling, components=1, address="127.0.0.1",
                         ports=ports)
    await session.gather()
    [host] = session.local_candidates()
    assert host.type == "host" and ports.first <= host.port <= ports.last
    peer = await aioice_peer(not controlling)
    await session.set_remote(peer.local_username, peer.local_password, loopback_attributes(peer))
    await feed(peer, session)
    selected, _ = await asyncio.gather(session.connect(5), peer.connect())
    assert selected[0].local.port == host.port
    # aioice refuses the probe that may go with our check (401), which fails nothing
    stats = session.stats
    assert (stats.peer_form, stats.probe_answers) == ("rfc5389", 0) and stats.probes <= 1
    assert session.remote_candidates_attribute() == (
        f"remote-candidates:1 127.0.0.1 {selected[0].remote.port}")
    await session.send(b"rtp?")
    assert await asyncio.wait_for(peer.recv(), 5) == b"rtp?"
    await peer.close()
    await session.close()
    assert ports.in_use == set()  # released on close


async def test_static_nat_address_is_what_the_sdp_advertises() -> None:
    session = IceSession(controlling=True, components=2, address="127.0.0.1",
                         ports=allocator(), static_nat_address="198.51.100.11")
    await session.gather()
    attrs = session.candidate_attributes()
    assert len(attrs) == 2 and all(" 198.51.100.11 " in a for a in attrs)
    assert session.default_candidate(2).component == 2
    await session.close()


async def test_unusable_remote_candidates_fail_with_the_reason() -> None:
    session = IceSession(controlling=True, components=1, address="127.0.0.1",
                         ports=allocator())
    await session.gather()
    await session.set_remote("abcd", "p" * 22, [
        "candidate:2 1 TCP-PASS 174455807 127.0.0.1 16410 typ host",
        "candidate:Wxz0Nd4eYFs5p1ZYkBOMq7cQxSSQ8V4v 1 pw UDP 0.830 127.0.0.1 50012",
    ])
    with pytest.raises(IceError) as failed:
        await session.connect(3)
    text = str(failed.value)
    assert "no remote candidate we can use" in text
    assert "TCP-PASS candidate 127.0.0.1:16410" in text and "draft-6" in text
    await session.close()


async def test_microsoft_stun_attributes_are_tolerated() -> None:
    """A check carrying MS-VERSION, MS-SEQUENCE-NUMBER, CANDIDATE-IDENTIFIER and
    IMPLEMENTATION-VERSION (as Lync sends) is answered like any other."""
    session = IceSession(controlling=False, components=1, address="127.0.0.1",
                         ports=allocator())
    await session.gather()
    await session.set_remote("lync", "p" * 22, [])
    [host] = session.local_candidates()
    request = stun.Message(message_method=stun.Method.BINDING,
                           message_class=stun.Class.REQUEST)
    request.attributes["USERNAME"] = f"{session.ufrag}:lync"
    request.attributes["PRIORITY"] = 1862270975
    request.attributes["ICE-CONTROLLING"] = 1
    request.add_message_integrity(session.pwd.encode())
    request.add_fingerprint()
    raw = bytes(request)
    extra = b"".join(struct.pack("!HH", kind, len(value)) + value for kind, value in [
        (0x8008, b"\x00\x00\x00\x02"), (0x8050, bytes(12)), (0x8054, b"abcd"),
        (0x8070, b"\x00\x00\x00\x02")])
    at = raw.index(struct.pack("!HH", 0x0008, 20))  # before MESSAGE-INTEGRITY
    body = raw[:at] + extra + raw[at:]
    body = body[:2] + struct.pack("!H", len(body) - 20) + body[4:]
    signed = resign(body, session.pwd.encode(), "rfc5389")
    loop = asyncio.get_running_loop()
    got: asyncio.Future[bytes] = loop.create_future()

    class Lync(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            if not got.done():
                got.set_result(data)

    transport, _ = await loop.create_datagram_endpoint(Lync, local_addr=("127.0.0.1", 0))
    transport.sendto(signed, ("127.0.0.1", host.port))
    answer = stun.parse_message(await asyncio.wait_for(got, 5))
    assert answer.message_class == stun.Class.RESPONSE
    assert answer.transaction_id == request.transaction_id
    transport.close()
    await session.close()


async def test_running_out_of_media_ports_fails_gathering_and_frees_what_it_took() -> None:
    ports = allocator(size=0)  # one port for two components
    session = IceSession(controlling=True, components=2, address="127.0.0.1", ports=ports)
    with pytest.raises(PortsExhausted) as exhausted:
        await session.gather()
    assert exhausted.value.status_hint == 503
    assert ports.in_use == set()


async def test_close_while_gathering_stops_it_and_gives_every_port_back() -> None:
    """A call that ends while its TURN server has not answered yet: close() stops the
    gathering at once (not after the 5 s TURN wait) with every host port released by the
    time it returns, gather() raises IceError, and nothing is bound afterwards."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a TURN server that never answers
    silent.bind(("127.0.0.1", 0))
    ports = allocator()
    session = IceSession(controlling=False, components=2, address="127.0.0.1", ports=ports,
                         turn=TurnSettings("127.0.0.1", silent.getsockname()[1], "u", "p"))
    gathering = asyncio.ensure_future(session.gather())
    for _ in range(100):
        await asyncio.sleep(0.01)
        if len(ports.in_use) == 2:
            break
    assert len(ports.in_use) == 2  # both host ports, TURN pending
    await asyncio.wait_for(session.close(), 1)
    assert ports.in_use == set()
    with pytest.raises(IceError, match="closed while gathering"):
        await asyncio.wait_for(gathering, 1)
    await asyncio.sleep(0.1)
    assert ports.in_use == set()
    with pytest.raises(IceError, match="closed before gathering"):
        await session.gather()
    silent.close()


# -- probes, against a scripted RFC 5389 agent -------------------------------------------------
PEER_PWD = "scripted-peer-password"


class ScriptedPeer(asyncio.DatagramProtocol):
    """An RFC 5389 agent whose every datagram the test reads and answers itself."""

    transport: asyncio.DatagramTransport

    def __init__(self) -> None:
        self.got: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.got.put_nowait((data, addr))

    async def next(self) -> tuple[bytes, tuple[str, int]]:
        return await asyncio.wait_for(self.got.get(), 5)

    def answer(self, request: bytes, addr: tuple[str, int]) -> None:
        """A success answer as RFC 5389 agents sign it."""
        response = stun.Message(message_method=stun.Method.BINDING,
                                message_class=stun.Class.RESPONSE,
                                transaction_id=stun.parse_message(request).transaction_id)
        response.attributes["XOR-MAPPED-ADDRESS"] = addr
        response.add_message_integrity(PEER_PWD.encode())
        self.transport.sendto(bytes(response), addr)

    def refuse(self, request: bytes, addr: tuple[str, int]) -> None:
        """What aioice answers a check that does not verify: 401, unsigned."""
        error = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.ERROR,
                             transaction_id=stun.parse_message(request).transaction_id)
        error.attributes["ERROR-CODE"] = (401, "Unauthenticated")
        error.add_fingerprint()
        self.transport.sendto(bytes(error), addr)


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[IceSession, ScriptedPeer]]:
    """A controlling session whose one remote candidate is a ScriptedPeer."""
    loop = asyncio.get_running_loop()
    transport, peer = await loop.create_datagram_endpoint(ScriptedPeer,
                                                          local_addr=("127.0.0.1", 0))
    session = IceSession(controlling=True, components=1, address="127.0.0.1",
                         ports=allocator())
    await session.gather()
    port = transport.get_extra_info("sockname")[1]
    await session.set_remote("peer", PEER_PWD,
                             [f"candidate:1 1 UDP 2130706431 127.0.0.1 {port} typ host"])
    yield session, peer
    await session.close()
    transport.close()


def unsigned(data: bytes) -> dict[str, object]:
    """A request's attributes but its integrity, whichever form signed it."""
    rfc5389 = resign(username_padding(data, inside=False), PEER_PWD.encode(), "rfc5389")
    attributes = stun.parse_message(rfc5389).attributes
    return {k: v for k, v in attributes.items() if k not in ("MESSAGE-INTEGRITY", "FINGERPRINT")}


@pytest.mark.parametrize("probe_refused", [True, False])  # 401, or never answered
async def test_a_check_goes_once_with_a_probe_an_rfc5389_agent_cannot_fail_it_with(
        scripted: tuple[IceSession, ScriptedPeer], probe_refused: bool) -> None:
    session, peer = scripted
    connecting = asyncio.ensure_future(session.connect(5))
    sent = dict([await peer.next(), await peer.next()])
    by_form = {signed_form(data, PEER_PWD.encode()): data for data in sent}
    check, probe = by_form["rfc5389"], by_form["msice2"]
    assert check[8:20] != probe[8:20]  # a transaction of its own
    assert unsigned(check) == unsigned(probe)  # the same check otherwise, USE-CANDIDATE too
    addr = sent[check]
    if probe_refused:
        peer.refuse(probe, addr)
    # the check's first transmission goes unanswered: its retransmission brings no probe
    again, _ = await peer.next()
    assert again == check
    peer.answer(check, addr)
    [selected] = await connecting
    assert selected.local.port == addr[1]
    stats = session.stats
    assert (stats.peer_form, stats.peer_form_from) == ("rfc5389", "answer")
    assert (stats.probes, stats.probe_answers) == (1, 0)
    assert peer.got.empty()


async def test_no_probe_goes_once_the_peer_signed_rfc5389(
        scripted: tuple[IceSession, ScriptedPeer]) -> None:
    session, peer = scripted
    [host] = session.local_candidates()
    theirs = stun.Message(message_method=stun.Method.BINDING,
                          message_class=stun.Class.REQUEST)
    theirs.attributes["USERNAME"] = f"{session.ufrag}:peer"
    theirs.attributes["PRIORITY"] = 1862270975
    theirs.attributes["ICE-CONTROLLED"] = 1
    theirs.add_message_integrity(session.pwd.encode())
    peer.transport.sendto(bytes(theirs), ("127.0.0.1", host.port))
    answer, _ = await peer.next()
    assert stun.parse_message(answer).message_class == stun.Class.RESPONSE
    assert (session.stats.peer_form, session.stats.peer_form_from) == ("rfc5389", "check")
    connecting = asyncio.ensure_future(session.connect(5))
    check, addr = await peer.next()
    assert signed_form(check, PEER_PWD.encode()) == "rfc5389"
    peer.answer(check, addr)
    await connecting
    assert session.stats.probes == 0 and peer.got.empty()


# -- libnice ----------------------------------------------------------------------------------
StartNice = Callable[..., Awaitable[NiceAgent]]


@pytest.fixture
async def nice() -> AsyncIterator[StartNice]:
    agents: list[NiceAgent] = []

    async def start(compat: str, pacing_ms: int = 0) -> NiceAgent:
        agents.append(await NiceAgent.start(compat, controlling=False, pacing_ms=pacing_ms))
        return agents[-1]

    yield start
    for agent in agents:
        await agent.close()


async def connect_to_libnice(peer: NiceAgent, hint: bool) -> IceSession:
    """A controlling session run against the (controlled) libnice agent `peer` until both
    have selected the same pair and media went through it both ways."""
    session = IceSession(controlling=True, components=1, address="127.0.0.1",
                         ports=allocator(), msice2_peer=hint)
    await session.gather()
    await feed(peer, session)
    await session.set_remote(peer.local_username, peer.local_password,
                             loopback_attributes(peer))
    selected, _ = await asyncio.gather(session.connect(10), peer.connect())
    assert peer.pair == [f"{selected[0].remote.address}:{selected[0].remote.port}",
                         f"127.0.0.1:{selected[0].local.port}"]
    await session.send(b"media through libnice")
    assert await asyncio.wait_for(peer.recv(), 5) == b"media through libnice"
    await peer.send(b"and back")
    assert await asyncio.wait_for(session.recv(), 5) == (b"and back", 1)
    await session.close()
    return session


@pytest.mark.peer
@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="needs Debian python3")
@pytest.mark.parametrize(("compat", "hint"), [
    ("rfc5245", False),
    ("oc2007r2", False),  # learns MS-ICE2 from the answer to a probe, or the peer's check
    ("oc2007r2", True),  # an MS-SIP leg: MS-ICE2 from our first check
])
async def test_session_and_libnice_connect(nice: StartNice, compat: str, hint: bool
                                          ) -> None:
    session = await connect_to_libnice(await nice(compat), hint)
    stats = session.stats
    if compat == "rfc5245":  # probed while unknown: at most once, for the one pair
        assert (stats.peer_form, stats.probe_answers) == ("rfc5389", 0), stats
        assert stats.probes <= 1, stats
    elif hint:
        assert (stats.peer_form_from, stats.probes) == ("hint", 0), stats
    else:
        assert stats.peer_form == "msice2", stats


@pytest.mark.peer
@pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="needs Debian python3")
async def test_without_the_hint_libnice_oc2007r2_is_done_one_round_trip_after_checks_start(
        nice: StartNice) -> None:
    """Our first check goes with its MS-ICE2 probe, and the probe's answer ends ICE: before
    any check of libnice's arrives, which its pacing holds back (Ta 500 ms here rather than
    its 20 ms, so a busy machine cannot reorder the two)."""
    peer = await nice("oc2007r2", pacing_ms=500)
    stats = (await connect_to_libnice(peer, hint=False)).stats
    assert (stats.peer_form, stats.peer_form_from) == ("msice2", "probe"), stats
    assert (stats.probes, stats.probe_answers) == (1, 1), stats


# -- TURN ---------------------------------------------------------------------------------------
@pytest.mark.peer
@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_relay_candidate_through_coturn_carries_the_checks(transport: str) -> None:
    with coturn() as port:
        session = IceSession(controlling=True, components=1, address="127.0.0.1",
                             ports=allocator(), relay_only=True,
                             turn=TurnSettings("127.0.0.1", port, "lync", "secret", transport))
        await session.gather()
        [relay] = session.local_candidates()
        assert relay.type == "relay" and session.stats.problems == []
        peer = await aioice_peer(False)
        await session.set_remote(peer.local_username, peer.local_password,
                                 loopback_attributes(peer))
        await feed(peer, session)
        selected, _ = await asyncio.gather(session.connect(10), peer.connect())
        assert selected[0].local.type == "relay"
        await session.send(b"relayed media")
        assert await asyncio.wait_for(peer.recv(), 5) == b"relayed media"
        await peer.close()
        await session.close()


@pytest.mark.peer
async def test_server_reflexive_candidate_from_the_stun_server() -> None:
    with coturn() as port:
        session = IceSession(controlling=True, components=1, address="127.0.0.1",
                             ports=allocator(), stun_server=("127.0.0.1", port))
        await session.gather()
        kinds = {c.type: c for c in session.local_candidates()}
        assert set(kinds) == {"host", "srflx"}
        assert kinds["srflx"].related_port == kinds["host"].port  # from the host socket
        await session.close()


@pytest.mark.peer
async def test_relay_only_with_a_wrong_password_cannot_even_gather() -> None:
    with coturn() as port:
        session = IceSession(controlling=True, components=1, address="127.0.0.1",
                             ports=allocator(), relay_only=True,
                             turn=TurnSettings("127.0.0.1", port, "lync", "nope"))
        with pytest.raises(IceError, match=r"no local candidate \(TURN allocation refused: "
                           r"401 Unauthorized\)"):
            await session.gather()


@pytest.mark.peer
async def test_wrong_turn_password_is_the_reason_ice_fails() -> None:
    with coturn() as port:
        session = IceSession(controlling=True, components=1, address="127.0.0.1",
                             ports=allocator(),
                             turn=TurnSettings("127.0.0.1", port, "lync", "wrong"))
        await session.gather()
        assert session.stats.problems == ["TURN allocation refused: 401 Unauthorized"]
        # the far end's only candidate is unreachable: nothing but the relay could have helped
        await session.set_remote("abcd", "p" * 22,
                                 [f"candidate:1 1 UDP 1 127.0.0.1 {free_port()} typ host"])
        with pytest.raises(IceError, match="TURN allocation refused: 401 Unauthorized"):
            await session.connect(3)
        await session.close()


if sys.platform != "linux":  # pragma: no cover - the lab is Debian
    pytestmark = pytest.mark.skip(reason="loopback ICE tests run on Linux")


async def test_unreadable_stun_never_reaches_the_media_path() -> None:
    """An MS-ICE2 keep-alive aioice cannot parse must not be relayed as media."""
    session = IceSession(controlling=True, components=1, address="127.0.0.1",
                         ports=allocator())
    got: list[bytes] = []
    session.on_data = lambda data, component: got.append(data)
    session.connection.data_received(b"\x00\x11\x00\x08!\x12\xa4B" + bytes(20), 1)
    session.connection.data_received(b"\x80\x00rtp", 1)
    assert got == [b"\x80\x00rtp"]
    await session.close()
