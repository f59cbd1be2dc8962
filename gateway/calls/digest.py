"""HTTP Digest authentication for REGISTER (RFC 3261 22, RFC 7616 algorithms, RFC 8760 for
SIP): challenges offering SHA-256 then MD5, and the check of an Authorization header.

Nonces are stateless: a timestamp and an HMAC of it under a per-process secret, so a
registrar needs no table of issued nonces and a restart only makes clients re-challenge.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import struct
from dataclasses import dataclass

ALGORITHMS = {"SHA-256": hashlib.sha256, "MD5": hashlib.md5}
NONCE_LIFETIME = 300.0
_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*,?')


@dataclass(frozen=True, slots=True)
class Credentials:
    """The parameters of an Authorization header (RFC 3261 25.1 digest-response)."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None


def parse_authorization(value: str) -> Credentials | None:
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        return None
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        m = _PARAM.match(rest, pos)
        if m is None or m.end() == pos:
            return None
        raw = m[2]
        params[m[1].lower()] = raw[1:-1].replace('\\"', '"') if raw.startswith('"') else raw
        pos = m.end()
    try:
        return Credentials(params["username"], params["realm"], params["nonce"], params["uri"],
                           params["response"], params.get("algorithm", "MD5").upper(),
                           params.get("qop"), params.get("nc"), params.get("cnonce"))
    except KeyError:
        return None


def response(creds: Credentials, method: str, password: str) -> str:
    """The digest the client should have sent (RFC 7616 3.4.1; RFC 2617 without qop)."""
    h = ALGORITHMS[creds.algorithm]

    def digest(text: str) -> str:
        return h(text.encode()).hexdigest()

    ha1 = digest(f"{creds.username}:{creds.realm}:{password}")
    ha2 = digest(f"{method}:{creds.uri}")
    if creds.qop == "auth":
        return digest(f"{ha1}:{creds.nonce}:{creds.nc}:{creds.cnonce}:auth:{ha2}")
    return digest(f"{ha1}:{creds.nonce}:{ha2}")


class Nonces:
    def __init__(self, secret: bytes | None = None) -> None:
        self.secret = secret or os.urandom(32)

    def issue(self, now: float) -> str:
        stamp = struct.pack("!d", now)
        mac = hmac.new(self.secret, stamp, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(stamp + mac).decode().rstrip("=")

    def check(self, nonce: str, now: float) -> str | None:
        """None when good; "stale" when ours but expired; "invalid" otherwise."""
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (ValueError, TypeError):
            return "invalid"
        if len(raw) != 24:
            return "invalid"
        stamp, mac = raw[:8], raw[8:]
        if not hmac.compare_digest(mac, hmac.new(self.secret, stamp, hashlib.sha256).digest()[:16]):
            return "invalid"
        issued = struct.unpack("!d", stamp)[0]
        return "stale" if not 0 <= now - issued <= NONCE_LIFETIME else None


def challenges(realm: str, nonce: str, *, stale: bool = False,
               algorithms: tuple[str, ...] = tuple(ALGORITHMS)) -> list[str]:
    """WWW-Authenticate values in order of preference, strongest first by default
    (RFC 8760 3)."""
    extra = ", stale=true" if stale else ""
    return [f'Digest realm="{realm}", nonce="{nonce}", algorithm={name}, qop="auth"{extra}'
            for name in algorithms]


def verify(creds: Credentials, method: str, password: str) -> bool:
    if creds.algorithm not in ALGORITHMS or (creds.qop not in (None, "auth")):
        return False
    if creds.qop == "auth" and (not creds.nc or not creds.cnonce):
        return False
    # Compared as bytes: compare_digest refuses str with characters beyond ASCII (a
    # TypeError), and `response=` is whatever the client wrote. UTF-8 leaves a hex digest
    # as it is and any other text unequal to it, so a wrong answer is just wrong.
    expected = response(creds, method, password).encode()
    return hmac.compare_digest(expected, creds.response.lower().encode("utf-8", "replace"))
