"""Checks a server makes on a parsed request before acting on it (RFC 3261 section 8.2)."""

from __future__ import annotations

from gateway.sip.errors import SipParseError, SipRequestError
from gateway.sip.message import Request
from gateway.sip.uri import AbsoluteUri

# Option tags this node implements; anything else in Require gets 420 (section 8.2.2.3).
SUPPORTED = frozenset({"timer", "100rel", "replaces", "ms-dialog-route-set-update"})


def check_request(
    request: Request, *, supported: frozenset[str] = SUPPORTED, forwarding: bool = False
) -> None:
    """Raise SipRequestError (or SipParseError for a malformed mandatory header) if the
    request must be refused; `forwarding` says whether the node would pass it on (483)."""
    request.vias  # noqa: B018 - the mandatory headers must parse (section 8.1.1)
    request.from_  # noqa: B018
    request.to  # noqa: B018
    request.call_id  # noqa: B018
    cseq = request.cseq
    if cseq.method != request.method:
        raise SipParseError(400, f"CSeq method {cseq.method} does not match {request.method}")
    if isinstance(request.uri, AbsoluteUri):
        raise SipRequestError(416, f"Unsupported URI Scheme ({request.uri.scheme})")
    max_forwards = request.max_forwards
    if forwarding and max_forwards == 0:
        raise SipRequestError(483, "Too Many Hops")
    if request.method in ("ACK", "CANCEL"):
        return  # Require is ignored on these (section 8.2.2.3)
    unknown = [tag for tag in request.tokens("Require") if tag not in supported]
    if unknown:
        tags = ", ".join(unknown)
        raise SipRequestError(420, f"Bad Extension (unsupported: {tags})", (("Unsupported", tags),))
