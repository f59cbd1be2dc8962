"""Hold and resume across a leg whose media ends at the node (Lync's, where the gateway
terminates ICE and SRTP): the other leg's SDP cannot be passed on, so what crosses is the
direction of each kind of stream (RFC 3264 8.4), restated in the description that leg last
had from us, with the next o= version (RFC 3264 8: a changed session)."""

from __future__ import annotations

from sdp.model import Line, SessionDescription

Directions = dict[str, str]  # media kind ("audio", "video", ...) -> direction


def directions(description: SessionDescription) -> Directions:
    """The direction of the first accepted stream of each kind (sendrecv when it states
    none, or the session-level one)."""
    default = description.session.direction or "sendrecv"
    out: Directions = {}
    for media in description.media:
        if not media.rejected and media.media not in out:
            out[media.media] = media.direction or default
    return out


def restated(description: SessionDescription, wanted: Directions,
             answering: SessionDescription | None = None) -> SessionDescription:
    """A copy of `description` with each accepted stream of a kind in `wanted` set to that
    direction, and the o= version one up. `answering`: the offer this copy answers, whose
    streams' payload types bound ours (an answer lists no format the offer lacks, RFC 3264
    6.1), which matters when `description` was an offer of ours."""
    out = description.copy()
    session_direction = out.session.direction
    if session_direction is not None:
        out.session.remove_attribute(session_direction)  # each stream states its own now
    for i, media in enumerate(out.media):
        if media.rejected:
            continue
        if media.media in wanted:
            media.set_direction(wanted[media.media])
        elif session_direction is not None:
            media.set_direction(media.direction or session_direction)
        offered = answering.media[i] if answering and i < len(answering.media) else None
        if offered is not None and not offered.rejected:
            kept = [f for f in media.formats if f in offered.formats]
            if kept:
                media.set_formats(kept)
    origin = out.origin
    if len(origin) >= 3 and origin[2].isdigit():
        origin[2] = str(int(origin[2]) + 1)
        out.session.lines[:] = [Line("o", " ".join(origin), line.number)
                                if line.kind == "o" else line for line in out.session.lines]
    return out
