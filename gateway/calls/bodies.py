"""Reading the session description out of a SIP message's body (single SDP or Lync's
multipart/alternative), without parsing more than needed."""

from __future__ import annotations

from gateway.sip.message import Request
from sdp.model import SessionDescription
from sdp.multipart import pick_sdp, split
from sdp.parse import parse_sdp


def boundary(request: Request) -> str:
    """The boundary of a multipart body ('' for any other body)."""
    content_type = request.content_type
    if content_type is None or not content_type.type.startswith("multipart/"):
        return ""
    return content_type.param("boundary") or ""


def sdp_of(request: Request) -> SessionDescription:
    """The session description a request carries: its SDP, or the SDP part of a multipart
    body (the RFC 5245 one over the draft-6 fallback). Raises SdpError."""
    content_type = request.content_type
    if content_type is not None and content_type.type.startswith("multipart/"):
        return parse_sdp(pick_sdp(split(request.body, boundary(request))).body)
    return parse_sdp(request.body)


def offered_sdp(request: Request) -> SessionDescription | None:
    """What an INVITE offers: `sdp_of` for an SDP or multipart body, None for no body or
    another kind of body."""
    content_type = request.content_type
    if not request.body or content_type is None:
        return None
    if content_type.type.startswith("multipart/") or content_type.type == "application/sdp":
        return sdp_of(request)
    return None


def origin(body: bytes) -> bytes | None:
    """The o= line: an offer with a new version changes the session (RFC 3264 8)."""
    for line in body.splitlines():
        if line.startswith(b"o="):
            return line.strip()
    return None
