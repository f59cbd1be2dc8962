"""What overload shedding needs of a request, read from its raw bytes without parsing it.

While the node sheds, most of what arrives is new calls it will refuse and the ACKs of those
refusals. Parsing a whole INVITE (SDP included) to answer it 503, then parsing its ACK to
find that no transaction wants it, cost about 85 us per refused call in Python: at four
times the load a node sustains that was an eighth of its CPU, taken from the calls it had
admitted. A glance reads only the request line and the few headers a stateless answer
copies (RFC 3261 8.2.6), and the 503 is written from those bytes as they came.

A glance declines (None) whatever it cannot read with certainty: folded or repeated
headers, a Via with several values, a missing header, a CSeq that names another method.
Those go the full way through the parser, which knows how to answer or refuse them. What a
glance does read, it reads as the parser would (tests/sip/test_glance.py holds it to that
over the RFC 4475 corpus). A request malformed further in (its URI, its SDP) is refused 503
while the node sheds rather than 400: overload is a reason to refuse any request before
looking at it (RFC 3261 21.5.4), and the client is refused either way.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.sip.errors import SipParseError
from gateway.sip.headers import Via, parse_via

# Header names as they may be written (RFC 3261 7.3.3 compact forms), to the role they play.
_ROLES = {b"via": "via", b"v": "via", b"from": "from", b"f": "from", b"to": "to", b"t": "to",
          b"call-id": "call-id", b"i": "call-id", b"cseq": "cseq"}

# The To tag the node gives its overload refusals: "o" is no hex digit, so no dialog tag
# (`message.new_tag`, hex) can look like it, and the ACK of a refusal is known by it alone.
SHED_TAG_PREFIX = b"o"


@dataclass(frozen=True, slots=True)
class Glance:
    method: str
    top_via: Via
    vias: tuple[bytes, ...]  # every Via line, as received
    from_: bytes  # these four lines as received, name included
    to: bytes
    call_id: bytes
    cseq: bytes
    to_tag: bytes | None

    @property
    def key(self) -> tuple[str, str, int | None, str] | None:
        """The request's server-transaction key (`transaction_layer.server_key`) when its
        branch is an RFC 3261 one; None for the RFC 2543 fallback, which needs the parser."""
        branch = self.top_via.branch
        if branch is None or not branch.startswith("z9hG4bK"):
            return None
        return (branch, self.top_via.host, self.top_via.port, "INVITE"
                if self.method == "ACK" else self.method)


def glance(data: bytes) -> Glance | None:
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = data[:end].split(b"\r\n")
    request_line = lines[0].split(b" ")
    if len(request_line) != 3 or request_line[2] != b"SIP/2.0":
        return None
    method = request_line[0]
    vias: list[bytes] = []
    found: dict[str, bytes] = {}
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            return None  # a folded header
        name, colon, _ = line.partition(b":")
        if not colon:
            return None
        role = _ROLES.get(name.strip().lower())
        if role == "via":
            vias.append(line)
        elif role is not None:
            if role in found:
                return None
            found[role] = line
    if not vias or len(found) != 4:
        return None
    cseq = found["cseq"].partition(b":")[2].split()
    if len(cseq) != 2 or cseq[1] != method or not cseq[0].isdigit():
        return None
    top = vias[0].partition(b":")[2]
    if b"," in top:
        return None
    try:
        top_via = parse_via(top.decode("ascii"))
    except (SipParseError, UnicodeDecodeError):
        return None
    try:
        return Glance(method.decode("ascii"), top_via, tuple(vias), found["from"], found["to"],
                      found["call-id"], found["cseq"], _tag(found["to"]))
    except UnicodeDecodeError:
        return None


def header_value(line: bytes) -> str:
    """A header line's value as the parser reads it (stripped text)."""
    return line.partition(b":")[2].strip().decode("utf-8", "replace")


def _tag(to_line: bytes) -> bytes | None:
    """The To tag: a header parameter, so after the URI's closing '>' when there is one
    (a ';tag=' inside the brackets is the URI's own)."""
    value = to_line.partition(b":")[2]
    params = value[value.rfind(b">") + 1:] if b"<" in value else value
    for param in params.split(b";")[1:]:
        name, _, tag = param.partition(b"=")
        if name.strip().lower() == b"tag":
            return tag.strip()
    return None
