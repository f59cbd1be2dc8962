"""Prompts out and keypad in, on one audio stream, for the calls the Virtual Reception
answers: the player (`gateway.media.player`) and the RFC 4733 receiver
(`gateway.media.dtmf`) behind whichever media side carries the stream (plain RTP, or ICE and
SRTP toward a Lync caller). Plays asked for before the stream is up wait for it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from gateway.media.dtmf import DtmfReceiver
from gateway.media.player import Player
from gateway.media.prompts import load

Digit = Callable[[str], None]
Done = Callable[[], None]
Send = Callable[[bytes, bool], None]


class Prompting(Protocol):
    """What call control asks of a reception's media side (through the adapter)."""

    def listen(self, on_digit: Digit) -> None: ...

    def play(self, prompts: tuple[str, ...], done: Done) -> None: ...

    def silence(self) -> None: ...


class Prompted:
    """A media side's `Prompting` half, handed to its `prompter`."""

    prompter: Prompter

    def listen(self, on_digit: Digit) -> None:
        self.prompter.listen(on_digit)

    def play(self, prompts: tuple[str, ...], done: Done) -> None:
        self.prompter.play(prompts, done)

    def silence(self) -> None:
        """The caller started typing: the prompt stops (barge-in)."""
        self.prompter.silence()


class Prompter:
    def __init__(self, theme: Path | None) -> None:
        self.theme = theme
        self.codec = ""
        self.player: Player | None = None
        self.dtmf: DtmfReceiver | None = None
        self.on_digit: Digit | None = None
        self._waiting: tuple[tuple[str, ...], Done] | None = None

    def start(self, send: Send, payload_type: int, codec: str, events: list[int]) -> None:
        """The stream is up: prompts go out with `send`, in `codec`."""
        self.codec = codec
        self.player = Player(send, payload_type=payload_type, codec=codec)
        self.dtmf = DtmfReceiver(frozenset(events))
        if self._waiting is not None:
            self.play(*self._waiting)
            self._waiting = None

    def listen(self, on_digit: Digit) -> None:
        self.on_digit = on_digit

    def play(self, prompts: tuple[str, ...], done: Done) -> None:
        """The prompts in a row, then `done`; whatever was playing is cut off first."""
        if self.player is None:
            self._waiting = (prompts, done)
            return
        self.player.stop()
        self.player.play(b"".join(load(name, self.codec, self.theme) for name in prompts),
                         done)

    def silence(self) -> None:
        self._waiting = None
        if self.player is not None:
            self.player.stop()

    def keypad(self, packet: bytes, rtcp: bool) -> None:
        """Where the caller's (unprotected, checked) packets end: its keys, one per event."""
        if rtcp or self.dtmf is None:
            return
        key = self.dtmf.rtp(packet)
        if key is not None and self.on_digit is not None:
            self.on_digit(key)

    def stop(self) -> None:
        self.silence()
