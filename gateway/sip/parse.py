"""Bytes to `Request` / `Response`, with the limits that keep a hostile peer cheap to serve.

The parser reads the start line and splits header lines once; typed header values are parsed
lazily by `Message`. What the core needs on every request (Via, From, To, Call-ID, CSeq) is
checked by `gateway.sip.validate`, so a response can be built even for a bad request.
"""

from __future__ import annotations

import contextlib
import re

from gateway.sip.errors import SipError, SipParseError, SipRequestError
from gateway.sip.headers import is_digits
from gateway.sip.message import (
    Headers,
    Request,
    Response,
    canonical,
    make_response,
    stamp_received,
)
from gateway.transport.framing import MAX_MESSAGE

MAX_HEADERS = 256
MAX_LINE = 8 * 1024
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")


_GOOD_NAMES: dict[str, str] = {}  # token -> its canonical header name


def _is_token(text: str) -> bool:
    return _header_key(text) is not None


def _header_key(name: str) -> str | None:
    """The canonical form of a header name, or None if it is not a token."""
    key = _GOOD_NAMES.get(name)
    if key is None:
        if _TOKEN.fullmatch(name) is None:
            return None
        key = canonical(name)
        if len(_GOOD_NAMES) < 4096:  # names repeat; bounded since peers choose them
            _GOOD_NAMES[name] = key
    return key


def parse_message(data: bytes, *, datagram: bool = True) -> Request | Response:
    """Parse one complete message.

    `datagram`: bytes past Content-Length are dropped (RFC 3261 section 18.3) and a missing
    Content-Length means the body is the rest; a stream framer has already cut the message to
    its Content-Length, so there the two must agree.
    """
    if len(data) > MAX_MESSAGE:
        raise SipParseError(513, f"Message Too Large (over {MAX_MESSAGE} bytes)")
    end = data.find(b"\r\n\r\n")
    sep = 4
    if end < 0:
        end = data.find(b"\n\n")
        sep = 2
        if end < 0:
            raise SipParseError(400, "Incomplete message (no end of headers)")
    try:
        head = data[:end].decode("utf-8")
    except UnicodeDecodeError:
        raise SipParseError(400, "Headers are not UTF-8") from None
    body = data[end + sep :]
    lines = head.split("\r\n")
    if head.count("\n") >= len(lines):  # some lines end in a bare LF, which is tolerated
        lines = head.replace("\r\n", "\n").split("\n")
    # Leading CRLFs before a start line are allowed (RFC 3261 section 7.5).
    while lines and not lines[0]:
        lines.pop(0)
    if not lines:
        raise SipParseError(400, "Empty message")
    start, *header_lines = lines
    if len(head) > MAX_LINE and max(map(len, header_lines), default=0) > MAX_LINE:
        raise SipParseError(400, f"Header line too long (over {MAX_LINE} characters)")
    items: list[tuple[str, str]] = []
    index: dict[str, list[int]] = {}  # built here, where each name is read anyway
    names = _GOOD_NAMES
    for line in header_lines:
        name, colon, value = line.partition(":")
        # A name seen before, written without space before the colon, is the common case;
        # continuation lines and everything else take the longer way.
        key = names.get(name) if colon else None
        if key is None:
            if line[:1] in (" ", "\t"):
                if not items:
                    raise SipParseError(400, "Bad header: continuation line before any header")
                last, previous = items[-1]
                items[-1] = (last, f"{previous} {line.strip()}")
                continue
            name = name.rstrip()
            if not colon or not name:
                raise SipParseError(400, f"Bad header line: {line[:40]!r}")
            key = _header_key(name)
            if key is None:
                raise SipParseError(400, f"Bad header name: {name[:40]!r}")
        at = len(items)
        if at == MAX_HEADERS:
            raise SipParseError(400, f"Too many headers (over {MAX_HEADERS})")
        positions = index.get(key)
        if positions is None:
            index[key] = [at]
        else:
            positions.append(at)
        items.append((name, value.strip()))
    body = _frame_body([items[i][1] for i in index.get("content-length", ())], body, datagram)
    headers = Headers(items, index)
    raw = data[: end + sep] + body if len(body) != len(data) - end - sep else data
    if start.startswith("SIP/"):
        return _response(start, headers, body, raw)
    return _request(start, headers, body, raw)


def _frame_body(values: list[str], body: bytes, datagram: bool) -> bytes:
    """The body as Content-Length (`values`: its lines) frames it."""
    if not values:
        if not datagram:
            raise SipParseError(400, "Missing header: Content-Length")
        return body
    if len(set(values)) > 1:
        raise SipParseError(400, "Bad header: Content-Length (conflicting values)")
    text = values[0].strip()
    if not is_digits(text) or len(text) > 6:
        raise SipParseError(400, "Bad header: Content-Length")
    length = int(text)
    if length > len(body):
        raise SipParseError(400, "Bad header: Content-Length exceeds the body received")
    return body[:length]


def _request(start: str, headers: Headers, body: bytes, raw: bytes) -> Request:
    parts = start.split(" ")
    if len(parts) != 3:
        raise SipParseError(400, f"Bad request line: {start[:60]!r}")
    method, uri, version = parts
    if not _is_token(method):
        raise SipParseError(400, f"Bad method: {method[:20]!r}")
    if version.upper() != "SIP/2.0":
        # Answerable: RFC 3261 section 8.2 says 505 for a version we do not speak.
        raise _VersionError(Request(method, uri, headers, body), version)
    if not uri:
        raise SipParseError(400, "Bad request line: empty Request-URI")
    return Request(method, uri, headers, body, raw)


def _response(start: str, headers: Headers, body: bytes, raw: bytes) -> Response:
    parts = start.split(" ", 2)
    if len(parts) < 2 or parts[0].upper() != "SIP/2.0":
        raise SipParseError(400, f"Bad status line: {start[:60]!r}")
    code = parts[1]
    if len(code) != 3 or not is_digits(code) or not 100 <= int(code) <= 699:
        raise SipParseError(400, f"Bad status code: {code[:10]!r}")
    return Response(int(code), parts[2] if len(parts) == 3 else "", headers, body, raw)


class _VersionError(SipParseError):
    def __init__(self, request: Request, version: str) -> None:
        super().__init__(505, f"Version Not Supported ({version[:20]})")
        self.request = request


def parse_request_leniently(data: bytes) -> Request | None:
    """The start line and headers of a request that failed to parse, for the error response.

    Only the head is read, with no limits beyond the message size; returns None for responses
    and for garbage, which the caller drops.
    """
    if len(data) > 4 * MAX_MESSAGE:
        return None
    end = data.find(b"\r\n\r\n")
    head = data if end < 0 else data[:end]
    text = head.decode("utf-8", errors="replace").replace("\r\n", "\n")
    lines = text.split("\n")
    while lines and not lines[0]:
        lines.pop(0)
    if not lines:
        return None
    # A request line with extra spaces, or spaces inside the URI (RFC 4475 3.1.2.8-10), is
    # still a request to refuse: the method is the first word, the version the last.
    method, _, rest = lines[0].strip(" ").partition(" ")
    uri, _, version = rest.rpartition(" ")
    uri = uri.strip(" ")
    if not uri or not version.startswith("SIP/") or not _is_token(method):
        return None
    items: list[tuple[str, str]] = []
    for line in lines[1 : MAX_HEADERS + 1]:
        if line[:1] in (" ", "\t") and items:
            items[-1] = (items[-1][0], f"{items[-1][1]} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        if colon and _is_token(name.strip()):
            items.append((name.strip(), value.strip()))
    return Request(method, uri, Headers(items))


def error_response(
    data: bytes, error: SipError, to_tag: str, source: tuple[str, int] | None = None
) -> Response | None:
    """The response to send for a request that could not be processed, or None to drop it.

    A response copies the request's Via, From, To, Call-ID and CSeq (RFC 3261 section
    8.2.6) as written, To with our tag, so a malformed one still gets the 400 that names it,
    and one missing gets the 400 without it (RFC 4475 3.1.4.1). It goes where the Via says
    (`source`, the address the request came from, is stamped on it as on any request), or
    back to the source when the Via cannot be read. Without any Via or CSeq line there is
    nothing a client could match the answer to (RFC 3261 17.1.3): None.
    """
    if isinstance(error, _VersionError):
        request: Request | None = error.request
    else:
        request = parse_request_leniently(data)
    if request is None or request.method == "ACK":
        return None  # garbage, a response, or an ACK, never answered (section 17.2.1)
    if "Via" not in request.headers or "CSeq" not in request.headers:
        return None
    if source is not None:
        with contextlib.suppress(SipParseError):  # an unreadable Via is copied as it is
            stamp_received(request, *source)
    extra = error.headers if isinstance(error, SipRequestError) else ()
    return make_response(request, error.status_hint, error.reason, to_tag=to_tag, headers=extra)

