"""SDES (RFC 4568) under each policy: which offered key a stream's answer uses, which
streams are refused and which offers are refused whole, and the keys we write."""

from __future__ import annotations

import base64

import pytest

from sdp.attributes import Crypto
from sdp.errors import NotAcceptable
from sdp.parse import parse_sdp
from sdp.sdes import (
    Encryption,
    StreamRefused,
    answer_crypto,
    answered_crypto,
    offer_crypto,
    offered_crypto,
)

KEY = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk"


def stream(proto: str, *cryptos: str) -> str:
    lines = "".join(f"a=crypto:{c}\r\n" for c in cryptos)
    return (f"v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n"
            f"m=audio 5004 {proto} 0\r\n{lines}")


EIGHTY = f"2 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^31|1:1"
THIRTY_TWO = f"1 AES_CM_128_HMAC_SHA1_32 inline:{KEY}"
F8 = f"3 F8_128_HMAC_SHA1_80 inline:{KEY}"


@pytest.mark.parametrize(("proto", "cryptos", "encryption", "tag"), [
    ("RTP/SAVP", (THIRTY_TWO, EIGHTY), "best_effort", 2),  # the 80-bit tag preferred
    ("RTP/SAVP", (F8, THIRTY_TWO), "required", 1),
    ("RTP/AVP", (EIGHTY,), "best_effort", 2),  # keys on AVP: used when we may
    ("RTP/AVP", (EIGHTY,), "off", None),
    ("RTP/AVP", (), "best_effort", None),
])
def test_the_key_a_stream_is_answered_with(proto: str, cryptos: tuple[str, ...],
                                           encryption: Encryption, tag: int | None) -> None:
    media = parse_sdp(stream(proto, *cryptos)).media[0]
    chosen = offered_crypto(media, encryption)
    assert (chosen.tag if chosen else None) == tag


@pytest.mark.parametrize(("proto", "cryptos", "encryption", "why"), [
    ("RTP/SAVP", (EIGHTY,), "off", "sip_media_encryption is off"),
    ("RTP/SAVP", (F8,), "best_effort", "no suite we speak"),
    ("RTP/SAVP", (), "best_effort", "no suite we speak"),
])
def test_streams_the_policy_cannot_answer_are_refused(proto: str, cryptos: tuple[str, ...],
                                                      encryption: Encryption, why: str) -> None:
    media = parse_sdp(stream(proto, *cryptos)).media[0]
    with pytest.raises(StreamRefused, match=why):
        offered_crypto(media, encryption)


@pytest.mark.parametrize("offer", [stream("RTP/AVP"), stream("RTP/SAVP", F8)])
def test_required_without_a_usable_key_refuses_the_offer(offer: str) -> None:
    with pytest.raises(NotAcceptable) as refused:
        offered_crypto(parse_sdp(offer).media[0], "required")
    assert not isinstance(refused.value, StreamRefused)
    assert refused.value.status_hint == 488 and "SRTP is required" in refused.value.rule


def test_our_keys_are_fresh_and_answers_keep_the_offers_tag_suite_lifetime_and_mki() -> None:
    offered = Crypto(2, "AES_CM_128_HMAC_SHA1_80", f"inline:{KEY}|2^31|1:1")
    ours = answer_crypto(offered)
    assert (ours.tag, ours.suite) == (2, "AES_CM_128_HMAC_SHA1_80")
    assert ours.key_params.endswith("|2^31|1:1") and ours.key != KEY
    assert len(base64.b64decode(ours.key)) == 30
    first, second = offer_crypto(), offer_crypto()
    assert first.key != second.key and (first.tag, first.suite) == (1, "AES_CM_128_HMAC_SHA1_80")
    assert first.key_params == f"inline:{first.key}|2^31"


def test_an_answers_key_must_carry_the_tag_and_suite_offered() -> None:
    ours = Crypto(1, "AES_CM_128_HMAC_SHA1_80", f"inline:{KEY}")
    media = parse_sdp(stream("RTP/SAVP", EIGHTY, f"1 AES_CM_128_HMAC_SHA1_32 inline:{KEY}",
                             f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^20")).media[0]
    found = answered_crypto(media, ours)
    assert found is not None and found.key_params.endswith("|2^20")
    assert answered_crypto(parse_sdp(stream("RTP/SAVP", EIGHTY)).media[0], ours) is None
