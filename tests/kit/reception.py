"""A Virtual Reception's config for tests: a lobby, a room, a PIN-protected room, all with
a theme of short prompts; and the caller's keys as RFC 4733 packets."""

from __future__ import annotations

import struct
from pathlib import Path

from gateway.media.prompts import CODECS, PROMPTS, file_name


def services(theme: Path) -> str:
    return f"""
[[services]]
type = "virtual_reception"
name = "Lobby"
aliases = ["reception"]
theme = "{theme}"

[[services]]
type = "vmr"
name = "Room 1234"
aliases = ["1234"]
target = "sip:room1234@mcu.example.com"

[[services]]
type = "vmr"
name = "Secret room"
aliases = ["5555"]
pin = "1357"
target = "sip:secret@mcu.example.com"
theme = "{theme}"
"""


def short_theme(folder: Path, payload: bytes = b"\xff" * 160) -> Path:
    """Every prompt `payload` (20 ms) in every codec: the flow, not the speech, is under
    test."""
    for name in PROMPTS:
        for codec in CODECS:
            (folder / file_name(name, codec)).write_bytes(payload)
    return folder


def event(key: int, seq: int, timestamp: int, end: bool) -> bytes:
    """An RFC 4733 telephone-event packet (`key`: 0-9, 10 for *, 11 for #), PT 101 as
    Lync's offer and the tests' SIP offers number it."""
    return (struct.pack("!BBHII", 0x80, 101, seq, timestamp, 0x4C594E43)
            + struct.pack("!BBH", key, (0x80 if end else 0) | 10, 800))
