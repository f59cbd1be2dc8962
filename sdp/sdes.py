"""SDES (RFC 4568): which of an offer's `a=crypto` lines a stream's answer uses under the
node's SRTP policy, and the keys we write. Every key the node sends in SDP (toward Lync or a
SIP endpoint, offering or answering) comes from here.

The policy (`global.sip_media_encryption`): "off" answers plain RTP and cannot answer an
RTP/SAVP offer at all (an answer keeps the offer's transport, RFC 3264 6.1, and a SAVP
stream without keys is not SRTP); "best_effort" uses SRTP whenever the offer carries a
suite we speak; "required" refuses an offer without one.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from typing import Literal

from sdp.attributes import Crypto
from sdp.errors import NotAcceptable
from sdp.model import Media

Encryption = Literal["off", "best_effort", "required"]
# SDES suites both libsrtp and Lync speak, in our order of preference.
SUITES = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")
# libsrtp's default, and what Lync writes: a master key lives at most 2^31 packets.
LIFETIME = "2^31"


class StreamRefused(NotAcceptable):
    """One stream cannot be answered under the policy (rejected with port 0); the offer's
    other streams may still be."""


def offered_crypto(media: Media, encryption: Encryption) -> Crypto | None:
    """The offered `a=crypto` the answer to `media` uses (the first of our preferred suite),
    or None for plain RTP. Raises StreamRefused for a stream the policy cannot answer, and
    NotAcceptable (the whole offer: 488) when SRTP is required and this stream has no key."""
    usable = [c for c in media.cryptos() if c.suite in SUITES]
    chosen = min(usable, key=lambda c: SUITES.index(c.suite)) if usable else None
    if encryption == "required" and chosen is None:
        raise NotAcceptable(f"{media.media}: SRTP is required (sip_media_encryption = "
                            "required) but the offer has no usable a=crypto")
    if encryption == "off" and media.secure:
        raise StreamRefused("offer requires SRTP (RTP/SAVP) and sip_media_encryption is off")
    if media.secure and chosen is None:
        raise StreamRefused(f"offer requires SRTP but has no suite we speak "
                            f"({', '.join(SUITES)})")
    return None if encryption == "off" else chosen


def new_key() -> str:
    """A fresh AES-128 master key and salt (30 bytes), base64 as SDES writes it."""
    return base64.b64encode(os.urandom(30)).decode()


def offer_crypto(tag: int = 1, suite: str = SUITES[0],
                 make_key: Callable[[], str] = new_key) -> Crypto:
    """Our key for a stream we offer."""
    return Crypto(tag, suite, f"inline:{make_key()}|{LIFETIME}")


def answer_crypto(offered: Crypto, make_key: Callable[[], str] = new_key) -> Crypto:
    """Our key answering `offered` (RFC 4568 5.1.2): its tag and suite, a key of our own,
    and the offer's lifetime and MKI layout (Lync writes '|2^31|1:1')."""
    fields = offered.key_params.split(";", 1)[0].removeprefix("inline:").split("|")[1:]
    return Crypto(offered.tag, offered.suite,
                  f"inline:{make_key()}" + "".join(f"|{f}" for f in fields))


def answered_crypto(media: Media, ours: Crypto) -> Crypto | None:
    """The answerer's key for a stream we offered `ours` on: the a=crypto with our tag and
    suite (RFC 4568 5.1.3), or None when the answer has none (it is not SRTP we can use)."""
    return next((c for c in media.cryptos() if c.tag == ours.tag and c.suite == ours.suite),
                None)
