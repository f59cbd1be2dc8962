"""RTP and SRTP packets as the far ends write them: plain packets, and libsrtp sessions
(the reference implementation, not ours) to protect and check them."""

from __future__ import annotations

import base64
import os
import struct

import pylibsrtp

from sdp.attributes import Crypto

SUITE = "AES_CM_128_HMAC_SHA1_80"


def rtp(seq: int, pt: int = 0, ssrc: int = 0x11223344, payload: bytes = b"\xaa" * 160) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq, seq * 160, ssrc) + payload


def rtcp_sr(ssrc: int = 0x11223344) -> bytes:
    return struct.pack("!BBHI", 0x80, 200, 6, ssrc) + bytes(20)


def crypto(mki: bool) -> tuple[Crypto, bytes]:
    key = os.urandom(30)
    params = f"inline:{base64.b64encode(key).decode()}|2^31" + ("|1:1" if mki else "")
    return Crypto(1, SUITE, params), key


def far_end(key: bytes, outbound: bool) -> pylibsrtp.Session:
    ssrc = pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND
    return pylibsrtp.Session(pylibsrtp.Policy(
        key=key, ssrc_type=ssrc, srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80))


class Wire:
    """A relay side's `send`: keeps what it is given, (packet, is RTCP), in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bool]] = []

    def __call__(self, packet: bytes, rtcp: bool) -> None:
        self.sent.append((packet, rtcp))
