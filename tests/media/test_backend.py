"""The built-in relay backend with a video plan: the stream becomes a translating
VideoRelay, its first VSR leaves toward Lync as the stream connects, the loop timer repeats
it each second while no video comes, and close() stops the timer."""

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
