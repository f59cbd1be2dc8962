"""Checks a server makes on a parsed request before acting on it (RFC 3261 section 8.2)."""

from __future__ import annotations

from gateway.sip.errors import SipParseError, SipRequestError
from gateway.sip.message import Request
from gateway.sip.uri import AbsoluteUri, SipUri

# Option tags this node implements; anything else in Require gets 420 (section 8.2.2.3).
SUPPORTED = frozenset({"timer", "100rel", "replaces", "ms-dialog-route-set-update"})

# Methods a SIP element must at least know (RFC 3261 and the extensions Lync uses); others
# get 501, these get 405 unless a handler takes them.
KNOWN_METHODS = frozenset(
    {
        "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE",
        "NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE", "SERVICE", "NEGOTIATE",
        "BENOTIFY",
    }
)


def check_request(
    request: Request, *, supported: frozenset[str] = SUPPORTED, forwarding: bool = False,
    known: frozenset[str] = KNOWN_METHODS,
) -> None:
    """Raise SipRequestError (or SipParseError for a malformed mandatory header) if the
    request must be refused; `forwarding` says whether the node would pass it on (483),
    `known` which methods it implements (501 for others wins over a CSeq mismatch)."""
    request.vias  # noqa: B018 - the mandatory headers must parse (section 8.1.1)
    request.from_  # noqa: B018
    request.to  # noqa: B018
    request.call_id  # noqa: B018
    cseq = request.cseq
    if cseq.method != request.method:
        if request.method not in known:
            # RFC 4475 3.1.2.18: a method nobody here knows is a 501 whatever its CSeq says
            # (400 is allowed; 501 keeps working when the method is later defined).
            raise SipRequestError(501, "Not Implemented")
        raise SipParseError(400, f"CSeq method {cseq.method} does not match {request.method}")
    uri = request.uri
    if isinstance(uri, AbsoluteUri):
        raise SipRequestError(416, f"Unsupported URI Scheme ({uri.scheme})")
    if isinstance(uri, SipUri) and uri.headers:
        # Headers are not allowed in a Request-URI (RFC 3261 19.1.1 table 1); whoever would
        # act on them is refused rather than forwarding them (RFC 4475 3.1.2.11).
        raise SipParseError(400, "Bad Request-URI (headers are not allowed)")
    max_forwards = request.max_forwards
    if forwarding and max_forwards == 0:
        raise SipRequestError(483, "Too Many Hops")
    if request.method in ("ACK", "CANCEL"):
        return  # Require is ignored on these (section 8.2.2.3)
    unknown = [tag for tag in request.tokens("Require") if tag not in supported]
    if unknown:
        tags = ", ".join(unknown)
        raise SipRequestError(420, f"Bad Extension (unsupported: {tags})", (("Unsupported", tags),))
