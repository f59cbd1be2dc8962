"""Hold, resume and streams removed across a leg whose media ends at the node (Lync's, where
the gateway terminates ICE and SRTP): the other leg's SDP cannot be passed on, so what
crosses is the direction of each kind of stream (RFC 3264 8.4) and the kinds a re-offer
rejects that were up (RFC 3264 8.2: video removed mid-call), restated in the description
that leg last had from us, with the next o= version (RFC 3264 8: a changed session). A
re-offer there that adds a stream the call does not take up is answered with that stream
rejected (`conformed`); video a Lync caller adds is taken up by call control instead."""

from __future__ import annotations

from sdp.capability import rejected
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


def dropped(answer: SessionDescription, offer: SessionDescription) -> frozenset[str]:
    """The kinds of stream `answer` (ours, as a leg last had it) accepts at a position where
    that leg's new `offer` rejects the stream: what it removes mid-call."""
    return frozenset(ours.media for ours, theirs in zip(answer.media, offer.media, strict=False)
                     if theirs.rejected and not ours.rejected)


def restated(description: SessionDescription, wanted: Directions,
             answering: SessionDescription | None = None,
             dropping: frozenset[str] = frozenset()) -> SessionDescription:
    """A copy of `description` with each accepted stream of a kind in `wanted` set to that
    direction, those of a kind in `dropping` rejected, and the o= version one up.
    `answering`: the offer this copy answers, whose streams' payload types bound ours (an
    answer lists no format the offer lacks, RFC 3264 6.1), which matters when
    `description` was an offer of ours."""
    out = description.copy()
    out.media[:] = [rejected(media) if media.media in dropping and not media.rejected
                    else media for media in out.media]
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
    if answering is not None:
        _fit(out, answering)
    _next_version(out)
    return out


def conformed(answer: SessionDescription,
              offer: SessionDescription) -> SessionDescription | None:
    """`answer` (ours, as last given) fitted to a new `offer` from the same leg, next o=
    version: streams the offer adds, and those it rejects, rejected (RFC 3264 6, 8.2); None
    when it fits as it is (a refresh: answered unchanged)."""
    fits = len(answer.media) == len(offer.media) and not any(
        o.rejected and not a.rejected for a, o in zip(answer.media, offer.media, strict=True))
    if fits:
        return None
    out = answer.copy()
    _fit(out, offer)
    _next_version(out)
    return out


def _fit(answer: SessionDescription, offer: SessionDescription) -> None:
    answer.media[len(offer.media):] = []
    answer.media += [rejected(media) for media in offer.media[len(answer.media):]]
    answer.media[:] = [rejected(ours) if theirs.rejected and not ours.rejected else ours
                       for ours, theirs in zip(answer.media, offer.media, strict=True)]


def _next_version(description: SessionDescription) -> None:
    origin = description.origin
    if len(origin) >= 3 and origin[2].isdigit():
        origin[2] = str(int(origin[2]) + 1)
        description.session.lines[:] = [Line("o", " ".join(origin), line.number)
                                        if line.kind == "o" else line
                                        for line in description.session.lines]
