"""Prompts sent as RTP: pre-encoded payload bytes cut into 20 ms packets and sent on the
event loop's clock. The player writes plain RTP; where the leg is SRTP, the `send` it is
given (the relay side's) protects it."""

from __future__ import annotations

import asyncio
import secrets
import struct
from collections import deque
from collections.abc import Callable

from gateway.media.prompts import CODECS, FRAME_SECONDS

Done = Callable[[], None]


class Player:
    """One RTP source, under one SSRC for its whole life (RFC 3550 8: a receiver tells
    streams apart by it), its sequence numbers and timestamps starting at random values
    (RFC 3550 5.1, against known-plaintext attacks on SRTP)."""

    def __init__(self, send: Callable[[bytes, bool], None], *, payload_type: int, codec: str,
                 ssrc: int | None = None, clock: Callable[[], float] | None = None) -> None:
        spec = CODECS[codec.upper()]
        self.send = send
        self.payload_type = payload_type
        self.frame_bytes = spec.frame_bytes
        self.frame_ticks = round(spec.clock_rate * FRAME_SECONDS)
        self.clock_rate = spec.clock_rate
        self.ssrc = secrets.randbits(32) if ssrc is None else ssrc
        self._clock = clock
        self._seq = secrets.randbits(16)
        self._ts = secrets.randbits(32)
        self._last_sent: float | None = None  # when the previous packet was due
        self._queue: deque[tuple[bytes, Done | None]] = deque()
        self._audio = b""
        self._done: Done | None = None
        self._start = 0.0  # when the current prompt's first packet was due
        self._index = 0  # of its next packet
        self._marker = False
        self._handle: asyncio.TimerHandle | None = None

    @property
    def playing(self) -> bool:
        return self._handle is not None

    def play(self, audio: bytes, done: Done | None = None) -> None:
        """Send `audio` (the codec's payload bytes), then call `done`. While another is
        playing it waits for it to end, and starts in the very next 20 ms slot."""
        self._queue.append((audio, done))
        if self._handle is None:
            self._next(self._now())

    def stop(self) -> None:
        """Nothing more is sent and no `done` is called, for what plays and what waits."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._queue.clear()
        self._audio = b""
        self._done = None

    def _now(self) -> float:
        return asyncio.get_running_loop().time() if self._clock is None else self._clock()

    def _next(self, start: float) -> None:
        """Begin the queued prompt whose first packet is due at `start`."""
        audio, self._done = self._queue.popleft()
        if self._last_sent is not None:
            # Timestamps run with the time between prompts (RFC 3550 5.1): a receiver
            # paces its playout by them, and the marker says a talkspurt starts after a gap.
            gap = max(0, round((start - self._last_sent) / FRAME_SECONDS) - 1)
            self._ts = (self._ts + gap * self.frame_ticks) & 0xFFFFFFFF
        self._audio, self._start, self._index, self._marker = audio, start, 0, True
        self._schedule(start)

    def _schedule(self, due: float) -> None:
        # Every packet's time is counted from the prompt's start, not from the previous
        # send, so that the loop's lateness on one packet is not added to the next ones.
        loop = asyncio.get_running_loop()
        when = due if self._clock is None else loop.time() + (due - self._clock())
        self._handle = loop.call_at(when, self._tick)

    def _tick(self) -> None:
        offset = self._index * self.frame_bytes
        due = self._start + self._index * FRAME_SECONDS
        if offset < len(self._audio):
            payload = self._audio[offset:offset + self.frame_bytes]
            header = struct.pack(">BBHII", 0x80, (0x80 if self._marker else 0)
                                 | self.payload_type, self._seq, self._ts, self.ssrc)
            self._marker = False
            self._seq = (self._seq + 1) & 0xFFFF
            self._ts = (self._ts + self.frame_ticks) & 0xFFFFFFFF
            self._last_sent = due
            self._index += 1
            self._schedule(due + FRAME_SECONDS)
            self.send(header + payload, False)
            return
        # The last packet's 20 ms are over: the prompt has been heard.
        self._handle = None
        done, self._done = self._done, None
        self._audio = b""
        if self._queue:
            self._next(due)
        if done is not None:
            done()
