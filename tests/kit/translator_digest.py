"""Prints what the video translators make of a fixed set of streams, as one digest, and
which build of them ran: `python -m tests.kit.translator_digest`. Run once compiled and
once with LYNCGATE_PURE_PYTHON=1, the two digests must be equal (tests/media/test_native.py).

The streams are seeded, not drawn afresh: pictures of a 720p-like sender in the sizes the
relay sees (SPS, PPS, IDR and P slices, FU-A and STAP-A), sent as they are and damaged
(packets lost, repeated, swapped, cut short, octets changed, header extensions, new SSRCs),
each through ToLync and what comes out of it through FromLync, and Lync-style packets
straight into FromLync. Every packet out, the counters, the key-frame wishes and the
sequence-number mapping go into the digest."""

from __future__ import annotations

import hashlib
import json
import random
import struct

from gateway.media import TRANSLATOR_BUILD
from gateway.media.h264 import packetize, stap_a
from gateway.media.video_translate import FromLync, ToLync

SPS = bytes.fromhex("6742c01e8c8d40501e900f0884")
PPS = bytes.fromhex("68ce3c80")
STREAMS = 120
FRAMES = 40


def pictures(rng: random.Random) -> list[list[bytes]]:
    """The NAL units of each picture: a key frame (SPS, PPS, IDR) every 15."""
    out = []
    for frame in range(FRAMES):
        body = rng.randbytes(rng.choice((40, 900, 3000, 7000)))
        if frame % 15 == 0:
            out.append([SPS, PPS, b"\x65" + body])
        else:
            units = [b"\x41" + body]
            if rng.random() < 0.2:
                units.insert(0, bytes([0x06]) + rng.randbytes(8))  # an SEI
            out.append(units)
    return out


def rtp(seq: int, timestamp: int, ssrc: int, payload: bytes, marker: bool) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | 96, seq & 0xFFFF,
                       timestamp & 0xFFFFFFFF, ssrc) + payload


def sender(rng: random.Random) -> list[bytes]:
    packets: list[bytes] = []
    seq, ssrc = rng.randrange(0x10000), 0x5151
    for frame, units in enumerate(pictures(rng)):
        payloads = packetize(units, rng.choice((1200, 1200, 500)))
        if rng.random() < 0.1 and len(units) > 1 and all(len(u) < 400 for u in units):
            payloads = [stap_a(units)]
        for index, payload in enumerate(payloads):
            packets.append(rtp(seq, frame * 3000, ssrc, payload, index == len(payloads) - 1))
            seq += 1
    return packets


def damaged(rng: random.Random, packets: list[bytes]) -> list[bytes]:
    out = list(packets)
    for _ in range(rng.randrange(1, 8)):
        if not out:
            break
        at = rng.randrange(len(out))
        what = rng.randrange(7)
        if what == 0:
            del out[at]
        elif what == 1:
            out.insert(at, out[at])
        elif what == 2 and at + 1 < len(out):
            out[at], out[at + 1] = out[at + 1], out[at]
        elif what == 3:
            out[at] = out[at][: rng.randrange(1, len(out[at]) + 1)]
        elif what == 4:
            octets = bytearray(out[at])
            octets[rng.randrange(len(octets))] = rng.randrange(256)
            out[at] = bytes(octets)
        elif what == 5:
            packet = out[at]
            out[at] = bytes([packet[0] | 0x10]) + packet[1:12] + b"\xbe\xde\x00\x00" + (
                packet[12:])
        else:  # a new SSRC from here on
            out[at:] = [p[:8] + b"\x00\x00\x77\x77" + p[12:] for p in out[at:]]
    return out


def run() -> str:
    rng = random.Random(20261206)
    digest = hashlib.sha256()

    def note(value: object) -> None:
        digest.update(json.dumps(value, sort_keys=True, default=repr).encode())

    for stream in range(STREAMS):
        packets = sender(rng)
        if stream % 2:
            packets = damaged(rng, packets)
        to = ToLync(ssrc=0x1000, payload_type=122, bitrate=1_500_000, first_sequence=stream)
        back = FromLync(ssrc_range=(0x1000, 0x1063), ssrc=0xABCD, payload_type=96,
                        first_sequence=stream * 7)
        lync: list[bytes] = []
        for index, packet in enumerate(packets):
            now = index * 0.004
            out = to.push(packet, now)
            if index % 25 == 0:
                to.poll(now)
            if stream % 3 == 0 and out:
                out = damaged(rng, out)
            lync += out
            for each in out:
                digest.update(each)
                for sip in back.push(each, now):
                    digest.update(sip)
            note([to.key_frame_wanted, back.key_frame_wanted])
        for translator in (to, back):
            note(translator.stats.as_dict())
            note([translator.source, [translator.source_sequence(n) for n in range(
                0, 0x10000, 97)]])
        # Lync's packets, damaged, straight into FromLync.
        straight = FromLync(ssrc_range=(0x1000, 0x1063), ssrc=0xABCD, payload_type=96)
        for packet in damaged(rng, lync):
            for sip in straight.push(packet, 0.0):
                digest.update(sip)
        note(straight.stats.as_dict())
    return digest.hexdigest()


if __name__ == "__main__":
    print(json.dumps({"compiled": TRANSLATOR_BUILD.compiled, "digest": run()}))
