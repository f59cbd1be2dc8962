"""MESSAGE-INTEGRITY as [MS-ICE2] agents compute it, and conversion to and from RFC 5389.

Lync's ICE (MS-ICE2, libnice's OC2007R2 mode) differs from RFC 5389 in two ways that make
each side reject the other's checks, so ICE never completes:
- the HMAC-SHA1 is computed with the hashed header's length counting the whole message
  (FINGERPRINT included) and the hashed bytes zero-padded to a multiple of 64 (RFC 3489);
- attributes are not padded to 4 bytes; USERNAME instead carries its NUL padding inside
  its value, so its length is a multiple of 4. aioice speaks RFC 5389 only; these pure
functions let the ICE glue recognise an MS-ICE2 message, re-sign it for aioice, sign
what goes back to that peer the MS-ICE2 way, and move a message to another transaction
(a check's MS-ICE2 copy, sent while the peer's form is unknown, and its answer).
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import struct
from typing import Literal

USERNAME = 0x0006
MESSAGE_INTEGRITY = 0x0008
XOR_MAPPED_ADDRESS = 0x0020
FINGERPRINT = 0x8028
FINGERPRINT_XOR = 0x5354554E
COOKIE = b"\x21\x12\xa4\x42"
Form = Literal["rfc5389", "msice2"]


def _integrity_offset(data: bytes) -> int | None:
    """Where the MESSAGE-INTEGRITY attribute starts, or None."""
    if len(data) < 20 or data[4:8] != COOKIE or data[0] & 0xC0:
        return None
    pos = 20
    while pos + 4 <= len(data):
        kind, length = struct.unpack_from("!HH", data, pos)
        if kind == MESSAGE_INTEGRITY:
            return pos if pos + 24 <= len(data) and length == 20 else None
        pos += 4 + (length + 3) // 4 * 4
    return None


def _attributes(data: bytes) -> list[tuple[int, int, int]]:
    """(type, offset, value length) of each attribute, reading 4-byte alignment."""
    out = []
    pos = 20
    while pos + 4 <= len(data):
        kind, length = struct.unpack_from("!HH", data, pos)
        out.append((kind, pos, length))
        pos += 4 + (length + 3) // 4 * 4
    return out


def username_padding(data: bytes, *, inside: bool) -> bytes:
    """USERNAME's NUL padding counted inside its value (MS-ICE2) or after it (RFC 5389).
    The bytes stay where they are; only the attribute's length changes."""
    for kind, pos, length in _attributes(data):
        if kind != USERNAME:
            continue
        value = data[pos + 4 : pos + 4 + (length + 3) // 4 * 4]
        new = len(value) if inside else len(value.rstrip(b"\x00"))
        out = bytearray(data)
        struct.pack_into("!H", out, pos + 2, new)
        return bytes(out)
    return data


def with_transaction_id(data: bytes, transaction_id: bytes) -> bytes:
    """`data` under another transaction ID; its integrity is to be redone (`resign`).
    An IPv6 XOR-MAPPED-ADDRESS is XORed with the ID (RFC 5389 15.2), so it is re-XORed to
    keep the address it carries."""
    out = bytearray(data)
    out[8:20] = transaction_id
    for kind, pos, length in _attributes(data):
        if kind == XOR_MAPPED_ADDRESS and length == 20:
            for i in range(12):
                out[pos + 12 + i] ^= data[8 + i] ^ transaction_id[i]
    return bytes(out)


def _mac(data: bytes, offset: int, key: bytes, form: Form) -> bytes:
    if form == "rfc5389":
        length = offset + 24 - 20  # up to the end of MESSAGE-INTEGRITY
        hashed = data[:2] + struct.pack("!H", length) + data[4:offset]
    else:
        length = len(data) - 20  # the whole message, FINGERPRINT included
        hashed = data[:2] + struct.pack("!H", length) + data[4:offset]
        if len(hashed) % 64:
            hashed += bytes(64 - len(hashed) % 64)
    return hmac.new(key, hashed, hashlib.sha1).digest()


def signed_form(data: bytes, key: bytes) -> Form | None:
    """Which integrity `data` carries with `key`, or None (none, or neither verifies)."""
    offset = _integrity_offset(data)
    if offset is None:
        return None
    received = data[offset + 4 : offset + 24]
    forms: tuple[Form, ...] = ("rfc5389", "msice2")
    for form in forms:
        if hmac.compare_digest(_mac(data, offset, key, form), received):
            return form
    return None


def resign(data: bytes, key: bytes, form: Form) -> bytes:
    """`data` with its MESSAGE-INTEGRITY recomputed in `form` and FINGERPRINT redone."""
    offset = _integrity_offset(data)
    if offset is None:
        return data
    out = bytearray(data)
    out[offset + 4 : offset + 24] = _mac(bytes(out), offset, key, form)
    fingerprint = offset + 24
    if fingerprint + 8 == len(out) and struct.unpack_from("!H", out, fingerprint)[0] == (
        FINGERPRINT
    ):
        crc = (binascii.crc32(bytes(out[:fingerprint])) ^ FINGERPRINT_XOR) & 0xFFFFFFFF
        struct.pack_into("!I", out, fingerprint + 4, crc)
    return bytes(out)
