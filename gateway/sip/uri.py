"""SIP, SIPS and tel URIs (RFC 3261 section 19.1, RFC 3966); other schemes stay opaque.

A parsed URI keeps its original text, so a URI the gateway does not change is written back
exactly as received (Lync compares Record-Route and Contact URIs byte for byte).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

from gateway.sip.errors import SipParseError

Params = tuple[tuple[str, str | None], ...]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_BAD_CHARS = re.compile(r'[ \t\r\n<>"]')
_HOSTPORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::([0-9]{1,5}))?$")


def _parse_params(text: str) -> Params:
    out: list[tuple[str, str | None]] = []
    for part in text.split(";"):
        if not part:
            continue
        name, eq, value = part.partition("=")
        out.append((name.strip().lower(), value.strip() if eq else None))
    return tuple(out)


def format_params(params: Params) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params)


@dataclass(frozen=True, slots=True)
class SipUri:
    scheme: str  # "sip" or "sips", lower case
    user: str | None  # as written (escaped); `user_unescaped` decodes %xx
    password: str | None
    host: str  # lower case; IPv6 references keep their brackets
    port: int | None
    params: Params = ()
    headers: str = ""  # the part after "?", unparsed
    raw: str = field(default="", compare=False)

    @property
    def user_unescaped(self) -> str | None:
        return None if self.user is None else unquote(self.user)

    @property
    def host_bare(self) -> str:
        """The host without IPv6 brackets, as sockets want it."""
        return self.host[1:-1] if self.host.startswith("[") else self.host

    def param(self, name: str) -> str | None:
        for key, value in self.params:
            if key == name:
                return value if value is not None else ""
        return None

    def has_param(self, name: str) -> bool:
        return any(key == name for key, _ in self.params)

    @property
    def transport(self) -> str | None:
        value = self.param("transport")
        return value.lower() if value else None

    def with_params(self, params: Params) -> SipUri:
        return _rebuild(self, params=params)

    def without_headers(self) -> SipUri:
        return _rebuild(self, headers="")

    def __str__(self) -> str:
        return self.raw or _format(self)


@dataclass(frozen=True, slots=True)
class TelUri:
    number: str
    params: Params = ()
    raw: str = field(default="", compare=False)

    def __str__(self) -> str:
        return self.raw or f"tel:{self.number}{format_params(self.params)}"


@dataclass(frozen=True, slots=True)
class AbsoluteUri:
    """A URI of a scheme the SIP core does not interpret (the server answers 416)."""

    scheme: str
    raw: str

    def __str__(self) -> str:
        return self.raw


Uri = SipUri | TelUri | AbsoluteUri


def _format(uri: SipUri) -> str:
    userinfo = ""
    if uri.user is not None:
        userinfo = uri.user + (f":{uri.password}" if uri.password is not None else "") + "@"
    port = f":{uri.port}" if uri.port is not None else ""
    headers = f"?{uri.headers}" if uri.headers else ""
    return f"{uri.scheme}:{userinfo}{uri.host}{port}{format_params(uri.params)}{headers}"


def _rebuild(uri: SipUri, **changes: Any) -> SipUri:
    fresh = replace(uri, **changes, raw="")
    return replace(fresh, raw=_format(fresh))


def make_sip_uri(
    host: str,
    *,
    user: str | None = None,
    port: int | None = None,
    scheme: str = "sip",
    params: Params = (),
) -> SipUri:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return _rebuild(
        SipUri(scheme=scheme, user=user, password=None, host=host.lower(), port=port),
        params=params,
    )


@lru_cache(maxsize=8192)
def parse_uri(text: str) -> Uri:
    """Parse a URI; raises SipParseError(400) when a sip/sips/tel URI is malformed.

    Results are immutable and peers repeat the same URIs (From, To, Contact, Route) in every
    message of a dialog and across calls, so parses are cached."""
    text = text.strip()
    match = _SCHEME.match(text)
    if not match:
        raise SipParseError(400, f"Bad URI: {text[:60]!r}")
    scheme = match.group(1).lower()
    rest = text[match.end():]
    if scheme in ("sip", "sips"):
        return _parse_sip(scheme, rest, text)
    if scheme == "tel":
        number, _, params = rest.partition(";")
        if not number or any(c in number for c in " <>\"@"):
            raise SipParseError(400, f"Bad tel URI: {text[:60]!r}")
        return TelUri(number=number, params=_parse_params(params), raw=text)
    return AbsoluteUri(scheme=scheme, raw=text)


def _parse_sip(scheme: str, rest: str, raw: str) -> SipUri:
    if not rest or _BAD_CHARS.search(rest):
        raise SipParseError(400, f"Bad SIP URI: {raw[:60]!r}")
    before, _, headers = rest.partition("?")
    user = password = None
    at = before.rfind("@")
    userinfo, hostpart = (before[:at], before[at + 1:]) if at >= 0 else (None, before)
    hostport, _, params = hostpart.partition(";")
    match = _HOSTPORT.match(hostport)
    if not match and rest.find("@", len(before)) >= 0:
        # The user part may hold '?' (and ';', '/', ',', '&', '=', '+', '$': RFC 3261
        # user-unreserved, as tel-style users do): the '@' ends the userinfo then, and the
        # headers start after the host. Tried only when the common reading failed.
        at = rest.rfind("@")
        userinfo = rest[:at]
        hostpart, _, headers = rest[at + 1:].partition("?")
        hostport, _, params = hostpart.partition(";")
        match = _HOSTPORT.match(hostport)
    if not match:
        raise SipParseError(400, f"Bad SIP URI host: {raw[:60]!r}")
    if userinfo is not None:
        user, colon, pw = userinfo.partition(":")
        password = pw if colon else None
        if not user:
            raise SipParseError(400, f"Bad SIP URI: empty user in {raw[:60]!r}")
    port = None
    if match.group(2):
        port = int(match.group(2))
        if port > 65535:
            raise SipParseError(400, f"Bad SIP URI port: {raw[:60]!r}")
    return SipUri(
        scheme=scheme,
        user=user,
        password=password,
        host=match.group(1).lower(),
        port=port,
        params=_parse_params(params),
        headers=headers,
        raw=raw,
    )
