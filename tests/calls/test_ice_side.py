"""The ICE life cycle both Lync sides share (`gateway.calls.ice_side`), pinned on each: a
call that ends (close) while its media is being prepared gives every port back, whenever it
comes, and the preparation raises IceError instead of going on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aioice
import pytest

from gateway.calls.ice_side import IceSide
from gateway.calls.lync_callee import LyncCallee
from gateway.calls.lync_caller import LyncCaller
from ice.errors import IceError
from ice.ports import PortAllocator
from ice.session import TurnSettings
from sdp.model import SessionDescription
from sdp.multipart import pick_sdp, split
from sdp.parse import parse_sdp
from tests.kit.lync import HeldPorts, silent_turn, wait_for_ports
from tests.peers import free_port
from tests.sdp.conftest import LYNC_BOUNDARY, fixture

AUDIO_VIDEO = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
               b"m=audio 5004 RTP/AVP 9\r\na=rtpmap:9 G722/8000\r\n"
               b"m=video 5006 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
               b"a=fmtp:96 packetization-mode=1\r\n")  # what Lync's X-H264UC is made of


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6:
                        ["127.0.0.1"])


def lync_offer() -> SessionDescription:
    """Lync 2013's RFC 5245 part: audio and video, two components each (no rtcp-mux)."""
    return parse_sdp(pick_sdp(split(fixture("lync2013_multipart.txt"), LYNC_BOUNDARY)).body)


def caller_side(ports: PortAllocator, turn: TurnSettings | None) -> IceSide:
    return LyncCaller(lync_offer(), ports, "127.0.0.1", static_nat="", encryption="best_effort",
                      turn=turn, stun=None, bandwidth_kbps=0, media_timeout=60.0, call_id="t")


def callee_side(ports: PortAllocator, turn: TurnSettings | None) -> IceSide:
    return LyncCallee(parse_sdp(AUDIO_VIDEO), ports, "127.0.0.1", static_nat="",
                      encryption="best_effort", turn=turn, stun=None, bandwidth_kbps=0,
                      media_timeout=60.0, call_id="t")


# Each side, and the host ports its audio and video gather on together: Lync's offer has
# two components a stream, ours to Lync one (rtcp-mux).
SIDES = pytest.mark.parametrize(("side", "host_ports"), [(caller_side, 4), (callee_side, 2)],
                                ids=["lync caller", "lync callee"])
Side = Callable[[PortAllocator, TurnSettings | None], IceSide]


@SIDES
async def test_streams_gather_side_by_side_and_close_meanwhile_frees_every_port(
        side: Side, host_ports: int) -> None:
    """A CANCEL while the TURN server has not answered: both streams are gathering at once
    (a dead TURN server costs its timeout once, not per stream); close() returns with every
    port back, and prepare() raises IceError instead of going on to reserve more."""
    base = free_port()
    ports = PortAllocator(base, base + 40)
    with silent_turn() as turn:
        media = side(ports, turn)
        preparing = asyncio.ensure_future(media.prepare())
        await wait_for_ports(ports, host_ports)
        await asyncio.wait_for(media.close(), 1)
        assert ports.in_use == set()
        with pytest.raises(IceError, match="closed while gathering"):
            await asyncio.wait_for(preparing, 1)
    await asyncio.sleep(0.1)
    assert ports.in_use == set()


@SIDES
async def test_ports_reserved_after_close_are_released_too(side: Side, host_ports: int) -> None:
    """close() comes while ICE's host ports are being bound: the ones bound after it are
    released as well, no SIP-side port is taken, and prepare() raises IceError rather than
    offering them."""
    base = free_port()
    ports = HeldPorts(base, base + 40)
    media = side(ports, None)
    preparing = asyncio.ensure_future(media.prepare())
    await asyncio.wait_for(ports.waiting.wait(), 5)
    await media.close()
    ports.go.set()
    with pytest.raises(IceError, match="closed while gathering"):
        await asyncio.wait_for(preparing, 5)
    assert ports.in_use == set()
