"""The built-in relay backend with a video plan: the stream becomes a translating
VideoRelay, its first VSR leaves toward Lync as the stream connects, the loop timer repeats
it each second while no video comes, and close() stops the timer. Mid-call, one stream
stops (its port freed, its timer cancelled) and a new one joins the running relay."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from gateway.media.backend import BuiltinRelay, StreamPlan
from gateway.media.video_plan import SipVideoLimits, VideoPlan
from gateway.media.video_relay import REPEAT, VideoRelay
from ice.ports import PortAllocator
from ice.session import IceSession


class Ice:
    """What IceMedia uses of an ICE session whose pair is selected: one component."""

    components = 1

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.on_data: Callable[[bytes, int], None] | None = None

    def send_now(self, data: bytes, component: int) -> None:
        self.sent.append(data)


async def test_a_video_plan_is_translated_and_polled_until_closed() -> None:
    ports = PortAllocator(47200, 47299)
    backend = BuiltinRelay(ports)
    await backend.reserve("127.0.0.1", 1, rtcp_mux=True)
    ice = Ice()
    plan = VideoPlan(122, 96, SipVideoLimits(640, 360, 30.0, 800_000), lync_send_ssrc=0x2000)
    media = backend.connect([StreamPlan("video", cast(IceSession, ice), ("127.0.0.1", 9),
                                        video=plan)], timeout=0)
    try:
        assert isinstance(media.streams[0], VideoRelay)
        assert len(ice.sent) == 1 and ice.sent[0][:2] == b"\x8f\xce"  # PSFB, FMT 15
        await asyncio.sleep(REPEAT + 0.3)
        assert len(ice.sent) == 2 and ice.sent[1] == ice.sent[0]  # the same request again
    finally:
        backend.close()
    await asyncio.sleep(REPEAT + 0.2)
    assert len(ice.sent) == 2
    (stats,) = media.video_stats()
    assert stats["vsr_sent"] == 2


async def test_a_stream_stopped_mid_call_frees_its_port_and_stops_polling() -> None:
    """stop_stream (a re-offer removed video): the stream's SIP-side RTP and RTCP ports
    are freed and its VSR timer stops, while the other stream's port stays; its counters
    stay in the call's media for the CDR."""
    ports = PortAllocator(47300, 47399)
    backend = BuiltinRelay(ports)
    audio_port, video_port = await backend.reserve("127.0.0.1", 2, rtcp_mux=False)
    ice = Ice()
    plan = VideoPlan(122, 96, SipVideoLimits(640, 360, 30.0, 800_000), lync_send_ssrc=0x2000)
    media = backend.connect([
        StreamPlan("audio", cast(IceSession, Ice()), ("127.0.0.1", 9)),
        StreamPlan("video", cast(IceSession, ice), ("127.0.0.1", 9), video=plan)], timeout=0)
    try:
        backend.stop_stream(1)
        assert ports.in_use == {audio_port, audio_port + 1}
        await asyncio.sleep(REPEAT + 0.3)
        assert len(ice.sent) == 1  # the first VSR only: never repeated
        assert len(media.video_stats()) == 1
    finally:
        backend.close()
    assert ports.in_use == set() and video_port not in ports.in_use


async def test_a_stream_added_to_a_running_relay_gets_the_next_reserved_port() -> None:
    """add_stream (video added mid-call): a port reserved after connect() is the new
    stream's; packets from the SIP side there reach the new stream's Lync side, and its
    counters join the call's media. A reserved port stopped before it joined (a declined
    addition) is freed, and the stream after it still joins at its own port."""
    ports = PortAllocator(47400, 47499)
    backend = BuiltinRelay(ports)
    await backend.reserve("127.0.0.1", 1, rtcp_mux=True)
    media = backend.connect([StreamPlan("audio", cast(IceSession, Ice()), ("127.0.0.1", 9))],
                            timeout=0)
    try:
        [video_port] = await backend.reserve("127.0.0.1", 1, rtcp_mux=True)
        ice = Ice()
        backend.add_stream(1, StreamPlan("video", cast(IceSession, ice), ("127.0.0.1", 9)))
        assert [s.media for s in media.streams] == ["audio", "video"]
        loop = asyncio.get_running_loop()
        sender, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                        remote_addr=("127.0.0.1", video_port))
        packet = bytes([0x80, 96, 0, 1]) + bytes(8) + b"frame"
        sender.sendto(packet)
        for _ in range(50):
            if ice.sent:
                break
            await asyncio.sleep(0.01)
        sender.close()
        assert ice.sent == [packet]
        [declined, later] = await backend.reserve("127.0.0.1", 2, rtcp_mux=True)
        backend.stop_stream(2)
        assert declined not in ports.in_use
        backend.add_stream(3, StreamPlan("video", cast(IceSession, Ice()), ("127.0.0.1", 9)))
        assert len(media.streams) == 3 and later in ports.in_use
    finally:
        backend.close()
    assert ports.in_use == set()
