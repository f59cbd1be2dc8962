"""Errors of the media package."""

from __future__ import annotations


class MediaError(Exception):
    """Media that cannot be set up; the message says why."""


class PacketError(MediaError):
    """One packet that is dropped (too short, not RTP v2, failed authentication, refused by
    libsrtp when protecting); counted, never fatal to the call."""

    def __init__(self, kind: str) -> None:
        self.kind = kind  # the counter it increments: short, version, auth, protect, ssrc
        super().__init__(kind)
