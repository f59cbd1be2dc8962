"""Typed values of the SIP headers the core interprets (RFC 3261 section 20 and 25).

Parsing is lazy: `Message` keeps header values as text and parses one of these on first access.
"""

from __future__ import annotations

import re
from dataclasses import field
from functools import lru_cache

from gateway.frozen import frozen
from gateway.sip.errors import SipParseError
from gateway.sip.uri import Params, SipUri, Uri, _parse_params, format_params, parse_uri

# Long names for the compact forms (RFC 3261 section 7.3.3 and registered extensions).
COMPACT = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

# Headers whose comma-separated values are separate entries (RFC 3261 section 7.3.1); only
# these are split, since other values (dates, auth parameters) contain commas.
LIST_HEADERS = frozenset(
    {
        "via",
        "contact",
        "route",
        "record-route",
        "require",
        "supported",
        "proxy-require",
        "unsupported",
        "allow",
        "accept",
        "accept-encoding",
        "accept-language",
        "allow-events",
        "path",
        "p-asserted-identity",
        "p-preferred-identity",
    }
)


def split_list(value: str) -> list[str]:
    """Split a comma-joined header value, respecting quoted strings and <...>."""
    if "," not in value:
        value = value.strip()
        return [value] if value else []
    out: list[str] = []
    depth = 0
    quoted = False
    start = 0
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            out.append(value[start:i].strip())
            start = i + 1
        i += 1
    if quoted:
        raise SipParseError(400, "Unterminated quoted string")
    out.append(value[start:].strip())
    return [item for item in out if item]


def _split_params(text: str) -> Params:
    """Header parameters after the value, where quoted strings may hold ';' or '='."""
    if '"' not in text:
        return _parse_params(text)
    out: list[tuple[str, str | None]] = []
    for part in _split_unquoted(text, ";"):
        if not part.strip():
            continue
        name, eq, value = part.partition("=")
        out.append((name.strip().lower(), value.strip() if eq else None))
    return tuple(out)


def _split_unquoted(text: str, sep: str) -> list[str]:
    """Split on `sep` outside quoted strings (where a backslash escapes the next character).
    Jumps between quotes and separators with str.find: Lync's Via carries long quoted
    parameters, and a per-character loop showed up in call-setup profiles."""
    parts: list[str] = []
    start = pos = 0
    end = len(text)
    while True:
        quote = text.find('"', pos)
        cut = text.find(sep, pos)
        if cut == -1:
            cut = end
        if quote == -1 or cut < quote:
            if cut == end:
                parts.append(text[start:])
                return parts
            parts.append(text[start:cut])
            start = pos = cut + 1
            continue
        pos = _closing_quote(text, quote) + 1


def _closing_quote(text: str, opening: int) -> int:
    pos = opening + 1
    while True:
        close = text.find('"', pos)
        if close == -1:
            raise SipParseError(400, "Unterminated quoted string")
        backslashes = 0
        back = close - 1
        while back > opening and text[back] == "\\":
            backslashes += 1
            back -= 1
        if backslashes % 2 == 0:
            return close
        pos = close + 1


def _param(params: Params, name: str) -> str | None:
    for key, value in params:
        if key == name:
            return value if value is not None else ""
    return None


# An unquoted display name is tokens and whitespace (RFC 3261 25.1); characters beyond ASCII
# are let through, since devices write names in their language without quotes.
_DISPLAY_TOKENS = re.compile(r"[A-Za-z0-9\-.!%*_+`'~ \t\x80-\U0010ffff]*")


@frozen
class NameAddr:
    """From, To, Contact, Route, Record-Route entries: [display] <uri> *(;param)."""

    uri: Uri
    display: str | None = None  # as written, quotes included
    params: Params = ()
    raw: str = field(default="", compare=False)

    @property
    def tag(self) -> str | None:
        return _param(self.params, "tag")

    def param(self, name: str) -> str | None:
        return _param(self.params, name)

    @property
    def sip_uri(self) -> SipUri:
        if not isinstance(self.uri, SipUri):
            raise SipParseError(416, f"Unsupported URI scheme in {self.raw[:60]!r}")
        return self.uri

    def with_params(self, params: Params) -> NameAddr:
        display = f"{self.display} " if self.display else ""
        raw = f"{display}<{self.uri}>{format_params(params)}"
        return NameAddr(uri=self.uri, display=self.display, params=params, raw=raw)

    def with_tag(self, tag: str) -> NameAddr:
        params = (*tuple((k, v) for k, v in self.params if k != "tag"), ("tag", tag))
        return self.with_params(params)

    def __str__(self) -> str:
        if self.raw:
            return self.raw
        display = f"{self.display} " if self.display else ""
        return f"{display}<{self.uri}>{format_params(self.params)}"


def parse_name_addr(text: str, header: str) -> NameAddr:
    text = text.strip()
    try:
        # A quoted display name may hold '<', '>' and escaped quotes: the address starts
        # after its closing quote.
        quoted_end = 0
        if text.startswith('"'):
            try:
                quoted_end = _closing_quote(text, 0) + 1
            except SipParseError:
                raise SipParseError(
                    400, f"Bad header: {header} (unterminated display name)"
                ) from None
        lt = text.find("<", quoted_end)
        if quoted_end and (lt < 0 or text[quoted_end:lt].strip()):
            raise SipParseError(400, f"Bad header: {header} (expected '<' after the display name)")
        if lt >= 0:
            gt = text.find(">", lt)
            if gt < 0:
                raise SipParseError(400, f"Bad header: {header} (missing '>')")
            display = (text[:lt].strip() or None) if lt else None
            if display and not quoted_end and _DISPLAY_TOKENS.fullmatch(display) is None:
                # RFC 4475 3.1.2.15: `Bell, Alexander <sip:...>` is not a display name; a
                # comma there would also split Contact and Route lists in the wrong place.
                raise SipParseError(
                    400, f"Bad header: {header} (display name must be quoted)")
            uri_text = text[lt + 1 : gt]
            if uri_text[:1].isspace() or uri_text[-1:].isspace():
                raise SipParseError(400, f"Bad header: {header} (spaces inside <>)")
            uri = parse_uri(uri_text)
            rest = text[gt + 1 :]
            params = _split_params(rest.lstrip().removeprefix(";")) if rest else ()
        else:
            # addr-spec form: parameters after the URI belong to the header, not the URI.
            uri_text, _, rest = text.partition(";")
            if "?" in uri_text or "," in uri_text:
                # RFC 3261 20: such a URI must be in <> (RFC 4475 3.1.2.13), else where
                # it ends is a guess.
                raise SipParseError(400, f"Bad header: {header} (URI must be in <>)")
            uri = parse_uri(uri_text)
            display = None
            params = _split_params(rest)
    except SipParseError as exc:
        if exc.reason.startswith("Bad header"):
            raise
        raise SipParseError(400, f"Bad header: {header} ({exc.reason})") from None
    return NameAddr(uri, display, params, text)


# Cached like `parse_uri`, and for the same reason: To outside a dialog (every OPTIONS probe),
# Contact, Route and Record-Route repeat, and results are immutable. From and To inside a
# dialog repeat on every request of it (the ACK and BYE after an INVITE), and a call's first
# From, new, only costs the cache an entry.
parse_repeated_name_addr = lru_cache(maxsize=8192)(parse_name_addr)


@frozen
class Via:
    transport: str  # upper case: UDP, TCP, TLS, WS ...
    host: str
    port: int | None
    params: Params
    raw: str = field(default="", compare=False)

    @property
    def branch(self) -> str | None:
        return _param(self.params, "branch")

    @property
    def received(self) -> str | None:
        return _param(self.params, "received")

    @property
    def maddr(self) -> str | None:
        return _param(self.params, "maddr")

    @property
    def rport(self) -> int | None:
        """The rport value; None when absent or requested without a value."""
        value = _param(self.params, "rport")
        return int(value) if value and is_digits(value) else None

    @property
    def wants_rport(self) -> bool:
        return _param(self.params, "rport") is not None

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return (self.host, self.port)

    @property
    def host_bare(self) -> str:
        return self.host[1:-1] if self.host.startswith("[") else self.host

    def with_params(self, params: Params) -> Via:
        port = f":{self.port}" if self.port is not None else ""
        raw = f"SIP/2.0/{self.transport} {self.host}{port}{format_params(params)}"
        return Via(self.transport, self.host, self.port, params, raw)

    def __str__(self) -> str:
        return self.raw or self.with_params(self.params).raw


_VIA = re.compile(
    r"^SIP\s*/\s*2\.0\s*/\s*([A-Za-z0-9-]+)\s+"
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?:\s*:\s*([0-9]{1,5}))?\s*(;.*)?$",
    re.DOTALL,
)


def parse_via(text: str) -> Via:
    text = text.strip()
    match = _VIA.match(text)
    if not match:
        raise SipParseError(400, "Bad header: Via")
    transport, host, port_text, params_text = match.groups()
    port = int(port_text) if port_text else None
    if port is not None and port > 65535:
        raise SipParseError(400, "Bad header: Via (port)")
    params = _split_params(params_text[1:]) if params_text else ()
    return Via(transport.upper(), host.lower(), port, params, text)


@frozen
class CSeq:
    seq: int
    method: str

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


@lru_cache(maxsize=1024)
def parse_cseq(text: str) -> CSeq:
    """Cached: probes and dialogs repeat their CSeq lines ("1 OPTIONS")."""
    parts = text.split()
    if len(parts) != 2 or not is_digits(parts[0]) or len(parts[0]) > 10:
        raise SipParseError(400, "Bad header: CSeq")
    seq = int(parts[0])
    if seq >= 2**31:
        raise SipParseError(400, "Bad header: CSeq (number too large)")
    return CSeq(seq, parts[1])


def is_digits(text: str) -> bool:
    """ASCII digits only: str.isdigit() also takes '²' and other scripts' digits, which
    int() then refuses with a ValueError the parser must never raise."""
    return text.isascii() and text.isdigit()


def parse_uint(text: str, header: str, limit: int = 2**32 - 1) -> int:
    text = text.strip()
    value = int(text) if is_digits(text) and len(text) <= 10 else limit + 1
    if value > limit:
        raise SipParseError(400, f"Bad header: {header}")
    return value


def parse_tokens(values: list[str]) -> list[str]:
    tokens = (token.strip().lower() for value in values for token in value.split(","))
    return [token for token in tokens if token]


@frozen
class SessionExpires:
    delta: int
    refresher: str | None  # "uac" | "uas" | None


def parse_session_expires(text: str) -> SessionExpires:
    value, _, params = text.partition(";")
    delta = parse_uint(value, "Session-Expires")
    refresher = _param(_split_params(params), "refresher")
    return SessionExpires(delta, refresher.lower() if refresher else None)


@frozen
class ContentType:
    type: str  # "application/sdp", lower case
    params: Params

    def param(self, name: str) -> str | None:
        value = _param(self.params, name)
        if value and len(value) >= 2 and value[0] == '"' == value[-1]:
            return value[1:-1]
        return value


def parse_content_type(text: str) -> ContentType:
    media, _, params = text.partition(";")
    media = media.strip().lower()
    if "/" not in media:
        raise SipParseError(400, "Bad header: Content-Type")
    return ContentType(media, _split_params(params))
