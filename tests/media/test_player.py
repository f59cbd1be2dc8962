"""The prompt player on a real event loop: packets every 20 ms counted from the start
(no drift, even when sending is slow), RTP headers as RFC 3550 and 3551 have them, prompts
queued back to back, stop, and the audio reassembled from the packets decoding (ffmpeg)
to the prompt's length."""

from __future__ import annotations

import asyncio
import itertools
import secrets
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from gateway.media.player import Player
from gateway.media.prompts import CODECS, TEXTS, load
from tests.kit.audio import assert_speech, decode


@dataclass
class Sent:
    seq: int
    ts: int
    marker: bool
    pt: int
    ssrc: int
    payload: bytes
    at: float


@dataclass
class Wire:
    """What the player sends, parsed as any RTP receiver would, and when."""

    packets: list[Sent] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    delay: float = 0.0  # seconds each send takes

    def __call__(self, packet: bytes, rtcp: bool) -> None:
        assert not rtcp
        assert len(packet) >= 12 and packet[0] == 0x80  # version 2, no padding/ext/CSRC
        seq, ts, ssrc = struct.unpack(">HII", packet[2:12])
        self.packets.append(Sent(seq, ts, bool(packet[1] & 0x80), packet[1] & 0x7F, ssrc,
                                 packet[12:], asyncio.get_running_loop().time()))
        self.log.append("packet")
        if self.delay:
            time.sleep(self.delay)

    def done(self, name: str) -> tuple[asyncio.Future[None], Callable[[], None]]:
        """A `done` for the player that logs `name`, and the future it completes."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def done() -> None:
            self.log.append(f"done {name}")
            future.set_result(None)

        return future, done


def audio(frames: int, fill: int = 0xFF) -> bytes:
    return bytes([fill]) * (160 * frames)


async def play(player: Player, wire: Wire, data: bytes, name: str = "a") -> None:
    finished, done = wire.done(name)
    player.play(data, done)
    await asyncio.wait_for(finished, 10)


def assert_contiguous(packets: list[Sent]) -> None:
    for before, after in itertools.pairwise(packets):
        assert after.seq == (before.seq + 1) & 0xFFFF
        assert after.ts == (before.ts + 160) & 0xFFFFFFFF


async def test_fifty_packets_every_20_ms_from_the_start() -> None:
    wire = Wire()
    await play(Player(wire, payload_type=0, codec="PCMU"), wire, audio(50))
    times = [p.at for p in wire.packets]
    assert len(times) == 50
    mean = (times[-1] - times[0]) / 49
    assert mean == pytest.approx(0.020, abs=0.002)
    # Each packet at its own slot counted from the first: late by a loop turn at most,
    # never early (beyond the loop's clock resolution).
    lateness = [t - (times[0] + 0.02 * i) for i, t in enumerate(times)]
    assert min(lateness) > -0.002
    assert max(lateness) < 0.05  # a loaded machine deschedules us now and then


async def test_a_slow_send_does_not_make_the_stream_drift() -> None:
    """6 ms spent in each send: pacing counted from the previous send would make every
    interval 26 ms and the 50th packet 300 ms late."""
    wire = Wire(delay=0.006)
    await play(Player(wire, payload_type=8, codec="PCMA"), wire, audio(50, 0xD5))
    times = [p.at for p in wire.packets]
    assert (times[-1] - times[0]) / 49 == pytest.approx(0.020, abs=0.002)


async def test_a_busy_loop_does_not_make_the_stream_drift() -> None:
    """Something else holds the loop 8 ms out of every 20: each packet goes out up to a
    few ms late, and the next is still due at its own slot, so the lateness does not add
    up (timed from each wake-up, 50 packets would end some 200 ms late)."""
    loop = asyncio.get_running_loop()
    busy = True

    def hog() -> None:
        time.sleep(0.008)
        if busy:
            loop.call_later(0.012, hog)

    loop.call_soon(hog)
    wire = Wire()
    try:
        await play(Player(wire, payload_type=0, codec="PCMU"), wire, audio(50))
    finally:
        busy = False
    times = [p.at for p in wire.packets]
    assert (times[-1] - times[0]) / 49 == pytest.approx(0.020, abs=0.002)
    assert max(t - (times[0] + 0.02 * i) for i, t in enumerate(times)) < 0.06


async def test_headers_of_one_prompt() -> None:
    wire = Wire()
    data = bytes(range(256)) * 5 + b"\x01" * 80  # 1360 octets: 8 packets and a half
    player = Player(wire, payload_type=9, codec="G722", ssrc=0xCAFEBABE)
    await play(player, wire, data)
    packets = wire.packets
    assert len(packets) == 9
    assert [p.marker for p in packets] == [True] + [False] * 8
    assert {p.pt for p in packets} == {9}
    assert {p.ssrc for p in packets} == {0xCAFEBABE}
    assert [len(p.payload) for p in packets] == [160] * 8 + [80]
    assert b"".join(p.payload for p in packets) == data
    # G.722's RTP clock is 8000 (RFC 3551 4.5.2): 160 per 20 ms, not 320.
    assert_contiguous(packets)


async def test_done_comes_when_the_last_packets_time_is_over() -> None:
    wire = Wire()
    await play(Player(wire, payload_type=0, codec="PCMU"), wire, audio(5))
    assert wire.log == ["packet"] * 5 + ["done a"]
    finished = asyncio.get_running_loop().time()
    assert finished - wire.packets[-1].at >= 0.018


async def test_random_start_and_an_ssrc_for_life() -> None:
    first, second = Wire(), Wire()
    one = Player(first, payload_type=0, codec="PCMU")
    two = Player(second, payload_type=0, codec="PCMU")
    await asyncio.gather(play(one, first, audio(1)), play(two, second, audio(1)))
    a, b = first.packets[0], second.packets[0]
    assert (a.seq, a.ts, a.ssrc) != (b.seq, b.ts, b.ssrc)
    await play(one, first, audio(1), "again")
    assert first.packets[1].ssrc == a.ssrc


async def test_sequence_and_timestamp_wrap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(secrets, "randbits", lambda bits: (1 << bits) - 1)
    wire = Wire()
    await play(Player(wire, payload_type=0, codec="PCMU"), wire, audio(3))
    assert [p.seq for p in wire.packets] == [0xFFFF, 0, 1]
    assert [p.ts for p in wire.packets] == [0xFFFFFFFF, 159, 319]


async def test_a_play_while_playing_follows_in_the_next_slot() -> None:
    wire = Wire()
    player = Player(wire, payload_type=0, codec="PCMU")
    first_done, done = wire.done("first")
    player.play(audio(4), done)
    second_done, done = wire.done("second")
    player.play(audio(3, 0x7F), done)
    assert player.playing
    await asyncio.wait_for(asyncio.gather(first_done, second_done), 5)
    assert not player.playing
    assert wire.log == ["packet"] * 4 + ["done first"] + ["packet"] * 3 + ["done second"]
    packets = wire.packets
    assert [p.marker for p in packets] == [True, False, False, False, True, False, False]
    assert_contiguous(packets)  # one stream: no gap between the prompts
    assert packets[4].payload == b"\x7f" * 160
    assert packets[4].at - packets[3].at == pytest.approx(0.02, abs=0.01)


async def test_stop_sends_nothing_more_and_calls_nothing() -> None:
    wire = Wire()
    player = Player(wire, payload_type=0, codec="PCMU")
    player.play(audio(20), lambda: wire.log.append("done first"))
    player.play(audio(5), lambda: wire.log.append("done queued"))
    await asyncio.sleep(0.07)
    player.stop()
    assert not player.playing
    sent = len(wire.packets)
    assert 2 <= sent < 20
    await asyncio.sleep(0.15)
    assert len(wire.packets) == sent and "done" not in " ".join(wire.log)
    player.stop()  # twice is harmless


async def test_after_stop_a_new_prompt_is_a_new_talkspurt_in_time() -> None:
    """Same SSRC, sequence going on, marker set, timestamp moved on by the silence."""
    wire = Wire()
    player = Player(wire, payload_type=0, codec="PCMU")
    player.play(audio(50))
    await asyncio.sleep(0.05)
    player.stop()
    before = wire.packets[-1]
    await asyncio.sleep(0.2)
    await play(player, wire, audio(2))
    after = wire.packets[-2]
    assert after.marker and after.ssrc == before.ssrc
    assert after.seq == (before.seq + 1) & 0xFFFF
    frames = round((after.at - before.at) / 0.02)
    assert frames >= 10
    assert (after.ts - before.ts) & 0xFFFFFFFF == pytest.approx(160 * frames, abs=320)


async def test_done_may_play_the_next_prompt() -> None:
    wire = Wire()
    player = Player(wire, payload_type=0, codec="PCMU")
    finished = asyncio.get_running_loop().create_future()
    player.play(audio(2), lambda: player.play(audio(2), lambda: finished.set_result(None)))
    await asyncio.wait_for(finished, 5)
    assert [p.marker for p in wire.packets] == [True, False, True, False]
    assert_contiguous(wire.packets)


async def test_done_may_stop_what_was_queued() -> None:
    wire = Wire()
    player = Player(wire, payload_type=0, codec="PCMU")
    player.play(audio(2), player.stop)
    player.play(audio(2), lambda: wire.log.append("done second"))
    await asyncio.sleep(0.2)
    assert wire.log == ["packet"] * 2


async def test_an_empty_prompt_is_done_at_once() -> None:
    wire = Wire()
    await play(Player(wire, payload_type=0, codec="PCMU"), wire, b"")
    assert wire.log == ["done a"]


async def test_a_clock_of_its_own_paces_the_same() -> None:
    loop = asyncio.get_running_loop()
    wire = Wire()
    await play(Player(wire, payload_type=0, codec="PCMU", clock=lambda: loop.time() + 1e6),
               wire, audio(10))
    times = [p.at for p in wire.packets]
    assert (times[-1] - times[0]) / 9 == pytest.approx(0.020, abs=0.003)


def test_unknown_codec() -> None:
    with pytest.raises(KeyError):
        Player(lambda packet, rtcp: None, payload_type=0, codec="OPUS")


@pytest.mark.parametrize("codec, pt", [("PCMU", 0), ("PCMA", 8), ("G722", 9)])
async def test_a_prompt_sent_decodes_to_its_speech(codec: str, pt: int) -> None:
    wire = Wire()
    prompt = load("goodbye", codec)
    await play(Player(wire, payload_type=pt, codec=codec.lower()), wire, prompt)
    packets = wire.packets
    assert len(packets) == len(prompt) // CODECS[codec].frame_bytes
    assert_contiguous(packets)
    samples, rate = decode(b"".join(p.payload for p in packets), codec)
    seconds = assert_speech(samples, rate, TEXTS["goodbye"])
    assert seconds == pytest.approx(len(packets) * 0.02, abs=0.021)
    # Sent in real time: as long on the wire as the speech lasts.
    assert packets[-1].at - packets[0].at == pytest.approx(seconds - 0.02, abs=0.03)
