"""Judging audio by ffmpeg's decoders: raw codec payload to samples, and whether samples are
speech of about a text's length (not silence, not a tone)."""

from __future__ import annotations

import math
import struct
import subprocess

from tests.peers import need

# ffmpeg's raw demuxer and the rate of the audio in the payload (G.722's RTP clock is 8000
# but it carries 16 kHz audio, which is what its decoder gives back).
DECODE = {"PCMU": ("mulaw", 8000), "PCMA": ("alaw", 8000), "G722": ("g722", 16000)}


def decode(payload: bytes, codec: str) -> tuple[list[int], int]:
    """The samples ffmpeg decodes from raw payload bytes, and their rate."""
    demuxer, rate = DECODE[codec]
    argv = [need("ffmpeg"), "-hide_banner", "-loglevel", "error", "-f", demuxer]
    if demuxer != "g722":
        argv += ["-ar", str(rate), "-ac", "1"]
    pcm = subprocess.run([*argv, "-i", "pipe:0", "-f", "s16le", "-ac", "1", "pipe:1"],
                         input=payload, check=True, capture_output=True).stdout
    return list(struct.unpack(f"<{len(pcm) // 2}h", pcm)), rate


def rms(samples: list[int]) -> float:
    return math.sqrt(sum(s * s for s in samples) / len(samples)) if samples else 0.0


def assert_speech(samples: list[int], rate: int, text: str) -> float:
    """Speech of about the length of its words, said at 120-200 words a minute:
    loud enough, mostly voiced, and with the rise and fall of syllables that no tone or
    noise has. Returns the duration."""
    seconds = len(samples) / rate
    assert 0.2 + 0.035 * len(text) <= seconds <= 0.6 + 0.09 * len(text), (seconds, text)
    assert rms(samples) > 1000, "silence or close to it"  # -30 dBFS
    window = rate // 50
    levels = [rms(samples[i:i + window]) for i in range(0, len(samples) - window + 1, window)]
    voiced = [level for level in levels if level > 500]
    assert len(voiced) >= 0.4 * len(levels)
    mean = sum(levels) / len(levels)
    spread = math.sqrt(sum((level - mean) ** 2 for level in levels) / len(levels))
    assert spread > 0.4 * mean, "a steady level: a tone or noise, not words"
    return seconds
