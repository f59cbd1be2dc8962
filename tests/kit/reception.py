"""A Virtual Reception's config for tests: a lobby, a room, a PIN-protected room, all with
a theme of short prompts."""

from __future__ import annotations

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
