"""SRTP/SRTCP for one direction of one stream, keyed from `a=crypto` (RFC 4568), on libsrtp
through pylibsrtp.

Lync writes its keys with an MKI (`inline:<key>|2^31|1:1`: MKI 1, one byte long). libsrtp as
pylibsrtp exposes it has no MKI setting, so the MKI is removed from packets before they are
unprotected and put back after they are protected: it sits between the encrypted part and
the authentication tag and is not itself authenticated (RFC 3711 3.1, 3.4).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import pylibsrtp

from gateway.media.errors import MediaError, PacketError
from sdp.attributes import Crypto

PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": (pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 10),
    "AES_CM_128_HMAC_SHA1_32": (pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32, 4),
}
SRTCP_TAG = 10  # SRTCP always carries an 80-bit tag (RFC 3711 5.2, RFC 4568 6.2.1)


@dataclass(frozen=True, slots=True)
class KeyParams:
    key: bytes  # master key + salt (30 bytes for the AES-128 suites)
    mki: bytes  # b"" without MKI


def key_params(crypto: Crypto) -> KeyParams:
    inline = crypto.key_params.split(";", 1)[0].removeprefix("inline:")
    fields = inline.split("|")
    try:
        key = base64.b64decode(fields[0], validate=True)
    except (binascii.Error, ValueError):
        raise MediaError(f"crypto tag {crypto.tag}: key is not base64") from None
    if len(key) != 30:
        raise MediaError(f"crypto tag {crypto.tag}: key is {len(key)} bytes, not 30")
    mki = b""
    for extra in fields[1:]:
        if ":" in extra:  # <mki value>:<mki length in bytes>
            value, _, length = extra.partition(":")
            if not (value.isdigit() and length.isdigit() and 1 <= int(length) <= 128):
                raise MediaError(f"crypto tag {crypto.tag}: bad MKI {extra!r}")
            mki = int(value).to_bytes(int(length), "big")
    return KeyParams(key, mki)


class SrtpContext:
    """Protects (outbound) or unprotects (inbound) the packets of one direction."""

    def __init__(self, crypto: Crypto, *, inbound: bool) -> None:
        if crypto.suite not in PROFILES:
            raise MediaError(f"SRTP suite {crypto.suite} is not supported")
        profile, self.rtp_tag = PROFILES[crypto.suite]
        params = key_params(crypto)
        self.mki = params.mki
        ssrc = pylibsrtp.Policy.SSRC_ANY_INBOUND if inbound else (
            pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        self.session = pylibsrtp.Session(
            pylibsrtp.Policy(key=params.key, ssrc_type=ssrc, srtp_profile=profile)
        )

    def protect(self, packet: bytes, rtcp: bool) -> bytes:
        try:
            out = self.session.protect_rtcp(packet) if rtcp else self.session.protect(packet)
        except pylibsrtp.Error:
            # What check() lets through libsrtp may still refuse (it parses more of the
            # packet): that one packet is dropped, never the relay's socket callback.
            raise PacketError("protect") from None
        return self._with_mki(out, SRTCP_TAG if rtcp else self.rtp_tag)

    def unprotect(self, packet: bytes, rtcp: bool) -> bytes:
        tag = SRTCP_TAG if rtcp else self.rtp_tag
        if self.mki:
            cut = len(packet) - tag - len(self.mki)
            if cut < 12 or packet[cut : cut + len(self.mki)] != self.mki:
                raise PacketError("auth")
            packet = packet[:cut] + packet[cut + len(self.mki) :]
        try:
            return self.session.unprotect_rtcp(packet) if rtcp else self.session.unprotect(
                packet)
        except pylibsrtp.Error:
            raise PacketError("auth") from None

    def _with_mki(self, packet: bytes, tag: int) -> bytes:
        if not self.mki:
            return packet
        cut = len(packet) - tag
        return packet[:cut] + self.mki + packet[cut:]
