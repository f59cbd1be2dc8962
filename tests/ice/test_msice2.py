"""MS-ICE2 message integrity and USERNAME padding, converted both ways without changing
anything else in the message (aioice makes the RFC 5389 messages)."""

from __future__ import annotations

import pytest
from aioice import stun

from ice.msice2 import resign, signed_form, username_padding, with_transaction_id

KEY = b"sUH9hCmGITUZB2zx0TPuKd"


def check_request() -> bytes:
    message = stun.Message(message_method=stun.Method.BINDING,
                           message_class=stun.Class.REQUEST)
    message.attributes["USERNAME"] = "asPH:kR3b"  # 9 bytes: 3 bytes of alignment padding
    message.attributes["PRIORITY"] = 1862270975
    message.add_message_integrity(KEY)
    message.add_fingerprint()
    return bytes(message)


def test_aioice_messages_are_rfc5389_signed() -> None:
    assert signed_form(check_request(), KEY) == "rfc5389"
    assert signed_form(check_request(), b"wrong password") is None


def test_conversion_to_msice2_and_back_is_lossless() -> None:
    original = check_request()
    legacy = resign(username_padding(original, inside=True), KEY, "msice2")
    assert signed_form(legacy, KEY) == "msice2"
    assert len(legacy) == len(original)
    assert legacy[22:24] == b"\x00\x0c"  # USERNAME length now counts its NUL padding
    back = resign(username_padding(legacy, inside=False), KEY, "rfc5389")
    assert back == original
    parsed = stun.parse_message(back)  # aioice reads and accepts it again
    assert parsed.check_message_integrity(KEY)
    assert parsed.attributes["USERNAME"] == "asPH:kR3b"


def test_non_stun_and_unsigned_data_pass_through() -> None:
    assert signed_form(b"\x80\x00RTP", KEY) is None
    assert resign(b"\x80\x00RTP", KEY, "msice2") == b"\x80\x00RTP"
    unsigned = bytes(stun.Message(message_method=stun.Method.BINDING,
                                  message_class=stun.Class.REQUEST))
    assert signed_form(unsigned, KEY) is None


@pytest.mark.parametrize("address", [("2001:db8::7", 50000), ("192.0.2.7", 50000)])
def test_a_message_moved_to_another_transaction_says_the_same(address: tuple[str, int]
                                                               ) -> None:
    """A probe's answer handed over as its check's: the IPv6 XOR-MAPPED-ADDRESS, XORed
    with the transaction ID, still carries the same address."""
    response = stun.Message(message_method=stun.Method.BINDING,
                            message_class=stun.Class.RESPONSE)
    response.attributes["XOR-MAPPED-ADDRESS"] = address
    response.add_message_integrity(KEY)
    check = bytes(range(12))
    moved = stun.parse_message(resign(with_transaction_id(bytes(response), check), KEY,
                                      "rfc5389"))
    assert moved.transaction_id == check
    assert moved.attributes["XOR-MAPPED-ADDRESS"] == address
    assert moved.check_message_integrity(KEY)
