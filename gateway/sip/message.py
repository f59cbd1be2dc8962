"""SIP requests and responses: ordered headers kept as text, typed views parsed on demand.

Unknown headers and the order of all headers survive a parse/serialise round trip; a message
nobody changed serialises to the bytes it was parsed from, modulo line folding.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Iterator
from typing import Any

from gateway.sip.errors import SipParseError
from gateway.sip.headers import (
    COMPACT,
    LIST_HEADERS,
    ContentType,
    CSeq,
    NameAddr,
    SessionExpires,
    Via,
    parse_content_type,
    parse_cseq,
    parse_repeated_name_addr,
    parse_session_expires,
    parse_tokens,
    parse_uint,
    parse_via,
    split_list,
)
from gateway.sip.uri import Uri, parse_uri

MAGIC_COOKIE = "z9hG4bK"

REASONS = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 300: "Multiple Choices",
    301: "Moved Permanently", 302: "Moved Temporarily", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    406: "Not Acceptable", 407: "Proxy Authentication Required", 408: "Request Timeout",
    410: "Gone", 413: "Request Entity Too Large", 414: "Request-URI Too Long",
    415: "Unsupported Media Type", 416: "Unsupported URI Scheme", 420: "Bad Extension",
    421: "Extension Required", 422: "Session Interval Too Small", 423: "Interval Too Brief",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 483: "Too Many Hops", 484: "Address Incomplete", 485: "Ambiguous",
    486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here",
    491: "Request Pending", 493: "Undecipherable", 500: "Server Internal Error",
    501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Server Time-out", 505: "Version Not Supported", 513: "Message Too Large",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}


_CANONICAL: dict[str, str] = {}


def canonical(name: str) -> str:
    """The lower-case long form of a header name, the key all look-ups use."""
    try:
        return _CANONICAL[name]
    except KeyError:
        lowered = name.lower()
        if len(lowered) == 1:
            lowered = COMPACT.get(lowered, lowered).lower()
        if len(_CANONICAL) < 4096:  # bounded: header names are chosen by peers
            _CANONICAL[name] = lowered
        return lowered


class Headers:
    """Ordered (name, value) pairs with case-insensitive, compact-form-aware look-ups."""

    __slots__ = ("_index", "_items")

    def __init__(
        self, items: Iterable[tuple[str, str]] = (), index: dict[str, list[int]] | None = None
    ) -> None:
        """`index` (canonical name -> positions in `items`) is the parser's, built as it
        read the lines, and then `items` is the parser's own list, taken as it is; otherwise
        the lines are copied and the index is built on the first look-up."""
        self._items: list[tuple[str, str]] = (
            items if index is not None and isinstance(items, list) else list(items))
        self._index = index

    def _idx(self) -> dict[str, list[int]]:
        index = self._index
        if index is None:
            index = self._index = {}
            cache = _CANONICAL
            for i, (name, _) in enumerate(self._items):
                key = cache.get(name) or canonical(name)
                positions = index.get(key)
                if positions is None:
                    index[key] = [i]
                else:
                    positions.append(i)
        return index

    # The look-ups below inline `_idx` and `canonical`'s cache hit: together they ran about
    # eighty times per call, each a Python call that found what was already there.

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return (_CANONICAL.get(name) or canonical(name)) in (self._index or self._idx())

    def get(self, name: str) -> str | None:
        """The first value of `name` (as written; a comma-joined line is returned whole)."""
        positions = (self._index or self._idx()).get(_CANONICAL.get(name) or canonical(name))
        return self._items[positions[0]][1] if positions else None

    def get_all(self, name: str) -> list[str]:
        """Every value of `name`; list headers are split on commas into entries."""
        key = _CANONICAL.get(name) or canonical(name)
        positions = (self._index or self._idx()).get(key)
        if not positions:
            return []
        values = [self._items[i][1] for i in positions]
        if key in LIST_HEADERS:
            return [entry for value in values for entry in split_list(value)]
        return values

    def select(self, names: Iterable[str]) -> list[tuple[str, str]]:
        """The lines of the headers `names` (canonical), in the order of the message."""
        index = self._index or self._idx()
        positions: list[int] = []
        for name in names:
            found = index.get(name)
            if found:
                positions += found
        positions.sort()
        items = self._items
        return [items[i] for i in positions]

    def lines(self, name: str) -> list[str]:
        """The value of every line of `name`, not split on commas."""
        items = self._items
        index = self._index or self._idx()
        return [items[i][1] for i in index.get(_CANONICAL.get(name) or canonical(name), ())]

    def set(self, name: str, value: str) -> None:
        """Replace every line of `name` by one, at the place of the first (else at the end)."""
        key = canonical(name)
        index = self._idx()
        positions = index.get(key)
        if not positions:
            index[key] = [len(self._items)]
            self._items.append((name, value))
            return
        self._items[positions[0]] = (name, value)
        if len(positions) > 1:
            for i in reversed(positions[1:]):
                del self._items[i]
            self._index = None  # later positions moved

    def add(self, name: str, value: str, *, first: bool = False) -> None:
        """Add a line; `first` puts it before the other lines of that name (a new top Via)."""
        if first:
            positions = self._idx().get(canonical(name))
            at = positions[0] if positions else len(self._items)
            self._items.insert(at, (name, value))
            self._index = None  # every later position moved
            return
        # Appending moves nothing: an index already built only gains the new line (messages
        # are built by adding headers and read in between).
        index = self._index
        if index is not None:
            index.setdefault(canonical(name), []).append(len(self._items))
        self._items.append((name, value))

    def replace_first(self, name: str, value: str) -> None:
        """Replace the first entry of a list header (the top Via), even inside a
        comma-joined line, leaving every other entry and line where it is."""
        positions = self._idx().get(canonical(name))
        if not positions:
            self.add(name, value)
            return
        at = positions[0]
        line_name, line_value = self._items[at]
        rest = split_list(line_value)[1:]
        self._items[at] = (line_name, ", ".join([value, *rest]))

    def remove(self, name: str) -> None:
        positions = (self._index or self._idx()).get(_CANONICAL.get(name) or canonical(name))
        if not positions:
            return
        for i in reversed(positions):
            del self._items[i]
        self._index = None  # later positions moved

    def copy(self) -> Headers:
        return Headers(self._items)

    def render(self, content_length: str) -> list[str]:
        """The header lines as written, Content-Length stating `content_length` (found
        through the index, not by comparing every line's name)."""
        items = self._items
        lines = [f"{name}: {value}" for name, value in items]
        at = (self._index or self._idx()).get("content-length")
        if not at:
            lines.append(f"Content-Length: {content_length}")
        for i in at or ():
            lines[i] = f"{items[i][0]}: {content_length}"
        return lines


class Message:
    """What requests and responses share: headers, body and the typed views of both."""

    # The views every request is checked through have slots of their own (None: not parsed
    # yet), the rest share `_cache`: they are read on every message, and a slot costs less
    # than a keyed cache with a closure per read.
    __slots__ = ("_cache", "_call_id", "_cseq", "_from", "_to", "_vias", "body", "headers", "raw")

    def __init__(self, headers: Headers, body: bytes, raw: bytes | None) -> None:
        self.headers = headers
        self.body = body
        # The bytes this message was parsed from; cleared by any change made through the API.
        self.raw = raw
        self._cache: dict[str, Any] = {}
        self._vias: list[Via] | None = None
        self._from: NameAddr | None = None
        self._to: NameAddr | None = None
        self._call_id: str | None = None
        self._cseq: CSeq | None = None

    # -- typed views (parsed on first use, cached) ----------------------------------------
    def _cached(self, key: str, make: Any) -> Any:
        try:
            return self._cache[key]
        except KeyError:
            value = self._cache[key] = make()
            return value

    def _required(self, name: str) -> str:
        """The value of a header that must appear exactly once."""
        values = self.headers.lines(name)
        if not values:
            raise SipParseError(400, f"Missing header: {name}")
        if len(values) > 1:
            raise SipParseError(400, f"Bad header: {name} (more than one)")
        return values[0]

    @property
    def vias(self) -> list[Via]:
        vias = self._vias
        if vias is None:
            values = self.headers.get_all("Via")
            if not values:
                raise SipParseError(400, "Missing header: Via")
            vias = self._vias = [parse_via(v) for v in values]
        return vias

    @property
    def top_via(self) -> Via:
        return self.vias[0]

    @property
    def from_(self) -> NameAddr:
        value = self._from
        if value is None:
            value = self._from = parse_repeated_name_addr(self._required("From"), "From")
        return value

    @property
    def to(self) -> NameAddr:
        value = self._to
        if value is None:
            value = self._to = parse_repeated_name_addr(self._required("To"), "To")
        return value

    @property
    def call_id(self) -> str:
        value = self._call_id
        if value is None:
            value = self._required("Call-ID").strip()
            if not value or " " in value:
                raise SipParseError(400, "Bad header: Call-ID")
            self._call_id = value
        return value

    @property
    def cseq(self) -> CSeq:
        value = self._cseq
        if value is None:
            value = self._cseq = parse_cseq(self._required("CSeq"))
        return value

    @property
    def max_forwards(self) -> int | None:
        value = self.headers.get("Max-Forwards")
        return None if value is None else parse_uint(value, "Max-Forwards", 255)

    @property
    def contacts(self) -> list[NameAddr]:
        """Contact entries; a `*` Contact (REGISTER removal) is returned as an empty list with
        `contact_star` true."""
        result: list[NameAddr] = self._cached(
            "contact",
            lambda: [
                parse_repeated_name_addr(v, "Contact")
                for v in self.headers.get_all("Contact") if v != "*"
            ],
        )
        return result

    @property
    def contact_star(self) -> bool:
        return self.headers.get_all("Contact") == ["*"]

    @property
    def routes(self) -> list[NameAddr]:
        result: list[NameAddr] = self._cached(
            "route",
            lambda: [parse_repeated_name_addr(v, "Route") for v in self.headers.get_all("Route")],
        )
        return result

    @property
    def record_routes(self) -> list[NameAddr]:
        result: list[NameAddr] = self._cached(
            "record-route",
            lambda: [
                parse_repeated_name_addr(v, "Record-Route")
                for v in self.headers.get_all("Record-Route")
            ],
        )
        return result

    def tokens(self, name: str) -> list[str]:
        """Option tags of Require, Supported, Proxy-Require, Unsupported (lower case)."""
        return parse_tokens(self.headers.get_all(name))

    @property
    def content_type(self) -> ContentType | None:
        def make() -> ContentType | None:
            value = self.headers.get("Content-Type")
            return None if value is None else parse_content_type(value)

        result: ContentType | None = self._cached("content-type", make)
        return result

    @property
    def expires(self) -> int | None:
        value = self.headers.get("Expires")
        return None if value is None else parse_uint(value, "Expires")

    @property
    def session_expires(self) -> SessionExpires | None:
        value = self.headers.get("Session-Expires")
        return None if value is None else parse_session_expires(value)

    # -- changes ----------------------------------------------------------------------------
    def changed(self) -> None:
        """Forget cached views and original bytes after changing `headers` directly."""
        self._cache.clear()
        self._vias = self._from = self._to = self._call_id = self._cseq = None
        self.raw = None

    def set_top_via(self, via: Via) -> None:
        """Replace the top Via entry (RFC 3261 18.2.1 stamps it on arrival); every parsed
        view, the Via list included, stays valid."""
        vias = self.vias
        self.headers.replace_first("Via", str(via))
        self._vias = [via, *vias[1:]]
        self.raw = None

    def set_header(self, name: str, value: str) -> None:
        self.headers.set(name, value)
        self.changed()

    def add_header(self, name: str, value: str, *, first: bool = False) -> None:
        self.headers.add(name, value, first=first)
        self.changed()

    def remove_header(self, name: str) -> None:
        self.headers.remove(name)
        self.changed()

    def set_body(self, body: bytes, content_type: str | None) -> None:
        self.body = body
        if content_type is None:
            self.headers.remove("Content-Type")
        else:
            self.headers.set("Content-Type", content_type)
        self.headers.set("Content-Length", str(len(body)))
        self.changed()

    # -- serialisation ----------------------------------------------------------------------
    def start_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        if self.raw is not None:
            return self.raw
        body = self.body
        length = str(len(body))
        lines = [self.start_line(), *self.headers.render(length)]
        lines += ("", "")  # the empty line that ends the head
        return "\r\n".join(lines).encode("utf-8") + body


class Request(Message):
    __slots__ = ("method", "uri_text")

    def __init__(
        self,
        method: str,
        uri: str,
        headers: Headers | None = None,
        body: bytes = b"",
        raw: bytes | None = None,
    ) -> None:
        super().__init__(headers if headers is not None else Headers(), body, raw)
        self.method = method
        self.uri_text = uri

    @property
    def uri(self) -> Uri:
        result: Uri = self._cached("uri", lambda: parse_uri(self.uri_text))
        return result

    def set_uri(self, uri: str) -> None:
        self.uri_text = uri
        self.changed()

    def start_line(self) -> str:
        return f"{self.method} {self.uri_text} SIP/2.0"

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri_text}>"


class Response(Message):
    __slots__ = ("reason", "status")

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: Headers | None = None,
        body: bytes = b"",
        raw: bytes | None = None,
    ) -> None:
        super().__init__(headers if headers is not None else Headers(), body, raw)
        self.status = status
        self.reason = reason if reason is not None else REASONS.get(status, "Unknown")

    def start_line(self) -> str:
        return f"SIP/2.0 {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str | None = None,
) -> Response:
    """A response to `request` per RFC 3261 section 8.2.6.

    Via (all lines, in order), From, Call-ID and CSeq are copied as written; To is copied and
    gets `to_tag` appended when it has no tag yet (never for 100 Trying, which must not create
    a dialog), or when it is malformed: the 400 naming it still needs a To.
    Record-Route is copied on responses that can establish a dialog.
    """
    lines = request.headers.select(_DIALOG_FORMING if 100 < status < 300 else _COPIED)
    to = request._to
    if to_tag and status != 100 and _untagged(request):
        lines = [(n, f"{v};tag={to_tag}" if canonical(n) == "to" else v) for n, v in lines]
        if to is not None:
            to = NameAddr(to.uri, to.display, (*to.params, ("tag", to_tag)),
                          f"{to.raw};tag={to_tag}")
    lines.extend(headers)
    if content_type is not None:
        lines.append(("Content-Type", content_type))
    lines.append(("Content-Length", str(len(body))))
    response = Response(status, reason, Headers(lines), body)
    # The copied lines mean what they meant in the request: the views it has parsed carry
    # over, so the transaction layer reading the response's Via, To and CSeq parses nothing.
    response._vias = request._vias
    response._from = request._from
    response._to = to
    response._call_id = request._call_id
    response._cseq = request._cseq
    return response


def _untagged(request: Request) -> bool:
    try:
        return request.to.tag is None
    except SipParseError:
        return True


# The request headers a response copies (section 8.2.6.2), in the request's order; Record-Route
# only on responses that can establish a dialog (section 12.1.1).
_COPIED = ("via", "from", "to", "call-id", "cseq")
_DIALOG_FORMING = (*_COPIED, "record-route")


def stamp_received(request: Request, host: str, port: int) -> None:
    """RFC 3261 18.2.1 and RFC 3581, on every transport: tell the response (and whoever
    debugs a NAT) where a request really came from. `received` when the sent-by host is a
    name or another address, or when the client asked for rport, which gets the port."""
    stamped = received_via(request.top_via, host, port)
    if stamped is not None:
        request.set_top_via(stamped)


def received_via(via: Via, host: str, port: int) -> Via | None:
    """`via` stamped as `stamp_received` says, or None when it needs nothing."""
    wants_rport = via.wants_rport
    if not wants_rport and _same_address(via.host_bare, host):
        return None
    params = [(k, v) for k, v in via.params if k not in ("received", "rport")]
    params.append(("received", host))
    if wants_rport:
        params.append(("rport", str(port)))
    return via.with_params(tuple(params))


def _same_address(sent_by: str, source: str) -> bool:
    if sent_by == source:
        return True
    if ":" not in sent_by:
        return False  # a name, or an IPv4 address, which has one spelling
    try:
        return ipaddress.ip_address(sent_by) == ipaddress.ip_address(source)
    except ValueError:
        return False


class _RandomHex:
    """Hex digits from the OS's CSPRNG, read 4 KiB at a time: branches, tags and Call-IDs
    must be unguessable (RFC 3261 8.1.1.4, 19.3), and a system call for each of the five a
    call needs cost more than formatting them."""

    __slots__ = ("_at", "_buffer")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._buffer = ""
        self._at = 0

    def take(self, nbytes: int) -> str:
        end = self._at + 2 * nbytes
        if end > len(self._buffer):
            self._buffer, self._at, end = os.urandom(4096).hex(), 0, 2 * nbytes
        out = self._buffer[self._at:end]
        self._at = end
        return out


_random_hex = _RandomHex()
os.register_at_fork(after_in_child=_random_hex.reset)  # a child must not repeat the parent's


def new_branch() -> str:
    return MAGIC_COOKIE + _random_hex.take(8)


def new_tag() -> str:
    return _random_hex.take(6)


def new_call_id(host: str) -> str:
    return f"{_random_hex.take(12)}@{host}"
