"""A routing rule's call capability (the guide's "Maximum media content of the call"):
which streams of a description go beyond it, and the description with those rejected.

"audio_only" leaves audio (and streams that are neither video nor presentation, such as
T.38 or text); "main_video" adds one main video stream; "main_video_presentation" limits
nothing. A presentation is Lync's application sharing (m=applicationsharing, or a stream
labelled applicationsharing-*: video-based screen sharing), a video stream marked
`a=content:slides` (RFC 4796), or BFCP, the floor control SIP endpoints present with
(RFC 4583). Under "main_video", a video stream after the first main one (Lync's
panoramic video) is beyond it too.
"""

from __future__ import annotations

from typing import Literal

from sdp.errors import NotAcceptable
from sdp.model import Line, Media, SessionDescription

Capability = Literal["audio_only", "main_video", "main_video_presentation"]
UNLIMITED: Capability = "main_video_presentation"


def presentation(media: Media) -> bool:
    label = media.label or ""
    return (media.media == "applicationsharing" or label.startswith("applicationsharing")
            or "slides" in (media.attribute("content") or "").split(",")
            or "BFCP" in media.proto.upper())


def beyond(description: SessionDescription, capability: Capability) -> list[str]:
    """Per m= line, why it is beyond `capability` ('' when it is within, or already
    rejected)."""
    out = []
    main_video = False
    for media in description.media:
        reason = ""
        if media.rejected or capability == UNLIMITED:
            pass
        elif presentation(media):
            reason = "presentation"
        elif media.media == "video":
            if capability == "audio_only" or main_video:
                reason = "video" if capability == "audio_only" else "a second video stream"
            main_video = True
        out.append(f"{reason} is beyond the rule's call capability ({capability})"
                   if reason else "")
    return out


def within(description: SessionDescription, refused: list[str]) -> SessionDescription:
    """A copy of `description` with each stream `refused` names rejected (port 0, RFC 3264
    6 and 8.2: the m= line kept, in its place)."""
    out = description.copy()
    out.media = [rejected(media) if reason else media
                 for media, reason in zip(out.media, refused, strict=True)]
    return out


def rejected(media: Media) -> Media:
    """A stream rejected with port 0: its type, transport and formats, nothing else (its
    keys, candidates and addresses say nothing about a stream nobody sends)."""
    parts = media.lines[0].value.split()
    parts[1] = "0"
    return Media([Line("m", " ".join(parts), media.lines[0].number)])


def require_some(description: SessionDescription, refused: list[str]) -> None:
    """Raise NotAcceptable (488) when `refused` leaves no stream of the offer, naming why
    each went (an offer with nothing to refuse is left to the endpoints)."""
    if not any(refused) or any(not media.rejected and not reason for media, reason
                               in zip(description.media, refused, strict=True)):
        return
    reasons = "; ".join(f"{m.media}: {r}" for m, r in zip(description.media, refused,
                                                           strict=True) if r)
    raise NotAcceptable(f"no stream can be accepted ({reasons})")
