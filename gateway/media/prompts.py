"""The Virtual Reception's spoken prompts: files of raw RTP payload bytes, one per prompt
and codec, made ahead of time by scripts/make-prompts (espeak-ng, then ffmpeg's G.711 and
G.722 encoders) so that nothing is encoded while a call runs. A service's theme directory
holds files by the same names; the ones it has replace the defaults."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import NamedTuple


class Codec(NamedTuple):
    clock_rate: int  # of RTP timestamps (RFC 3551 4.5.2: G.722's is 8000, not its 16 kHz)
    frame_bytes: int  # payload octets per 20 ms packet
    suffix: str  # of the prompt files


CODECS: dict[str, Codec] = {
    "PCMU": Codec(8000, 160, "pcmu"),  # 8-bit mu-law samples at 8 kHz
    "PCMA": Codec(8000, 160, "pcma"),
    "G722": Codec(8000, 160, "g722"),  # 64 kbit/s of 16 kHz audio
}
FRAME_SECONDS = 0.02

# Said by scripts/make-prompts; a theme may say something else in files of these names.
TEXTS: dict[str, str] = {
    "welcome": "Welcome to the virtual reception.",
    "enter_number": "Please enter the number of the meeting you want to join, "
                    "followed by the hash key.",
    "not_found": "That number was not found. Please try again.",
    "enter_pin": "Please enter the PIN, followed by the hash key.",
    "wrong_pin": "That PIN is not correct.",
    "goodbye": "Goodbye.",
    "meeting_not_found": "That meeting was not found.",
    "connecting": "Connecting you now.",
    # A Lync meeting's lobby, for a caller that dialled its Conference ID (`calls.meeting`).
    "lobby_wait": "Please wait. The meeting organiser will let you in shortly.",
    "not_admitted": "You were not let in to the meeting.",
}
PROMPTS: tuple[str, ...] = tuple(TEXTS)
DEFAULT = Path(__file__).parent / "prompts" / "default"


def file_name(name: str, codec: str) -> str:
    """The prompt's file name in the default directory and in any theme."""
    if name not in TEXTS:
        raise KeyError(f"no prompt named {name!r} (prompts: {', '.join(PROMPTS)})")
    if codec.upper() not in CODECS:
        raise KeyError(f"no prompts for codec {codec!r} (codecs: {', '.join(CODECS)})")
    return f"{name}.{CODECS[codec.upper()].suffix}"


def load(name: str, codec: str, theme: Path | None = None) -> bytes:
    """The prompt's payload bytes for the codec (an SDP encoding name, any case): the
    theme's file when it has one, the default otherwise. Read once per (name, codec,
    theme): a theme's changed files are read after `forget()` (the daemon's reload)."""
    return _load(file_name(name, codec), theme)


def forget() -> None:
    """Drop what was read, so that the next load reads the files again."""
    _load.cache_clear()


@functools.lru_cache(maxsize=256)
def _load(file: str, theme: Path | None) -> bytes:
    if theme is not None:
        try:
            return (theme / file).read_bytes()
        except FileNotFoundError:
            pass
    return (DEFAULT / file).read_bytes()
