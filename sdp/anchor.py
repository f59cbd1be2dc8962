"""Rewriting a description so its media goes through the node: every c= to the node's
address, each accepted m= to the relay port for that stream, a=rtcp to the port after it
(the relay binds RTP on an even port and RTCP on the next, RFC 3550 11) or to the same one
under rtcp-mux, and a rule's bandwidth cap. Everything else (codecs, crypto, directions,
unknown lines) stays as the peer wrote it."""

from __future__ import annotations

from dataclasses import dataclass

from sdp.attributes import parse_rtcp
from sdp.model import Line, Media, SessionDescription
from sdp.offer_answer import cap_bandwidth


@dataclass(frozen=True, slots=True)
class Remote:
    """Where one stream's RTP and RTCP go, per the description of the side receiving them."""

    rtp: tuple[str, int]
    rtcp: tuple[str, int]


def anchored(description: SessionDescription, address: str, ports: list[int],
             bandwidth_kbps: int = 0) -> SessionDescription:
    """A copy of `description` pointing at `address` and `ports[i]` for stream i, each
    accepted stream held to `bandwidth_kbps` (0: as the peer wrote it); rejected streams
    (port 0) stay rejected."""
    if len(ports) != len(description.media):
        raise ValueError(f"{len(ports)} ports for {len(description.media)} streams")
    out = description.copy()
    family = "IP6" if ":" in address else "IP4"
    connection = f"IN {family} {address}"
    for section in (out.session, *out.media):
        # A null address is an old-style hold (RFC 3264 8.4): the far side must see it.
        section.lines[:] = [Line("c", connection, ln.number)
                            if ln.kind == "c" and not _null(ln.value) else ln
                            for ln in section.lines]
    if not any(ln.kind == "c" for ln in out.session.lines):
        out.session.insert(Line("c", connection))
    origin = out.session.values("o")
    if origin:
        parts = origin[0].split()
        parts[4:6] = [family, address]
        out.session.lines[:] = [Line("o", " ".join(parts), ln.number) if ln.kind == "o"
                                else ln for ln in out.session.lines]
    for media, port in zip(out.media, ports, strict=True):
        if media.rejected:
            continue
        media.set_port(port)
        if media.has("rtcp"):
            # Multiplexed, RTCP shares the one port reserved for the stream (RFC 5761 5.1.3).
            media.set_attribute("rtcp", str(port if media.has("rtcp-mux") else port + 1))
        cap_bandwidth(media, bandwidth_kbps)
    return out


def _null(connection: str) -> bool:
    return connection.split()[-1:] in (["0.0.0.0"], ["::"])


def remote_addresses(description: SessionDescription) -> list[Remote | None]:
    """Where each stream's media goes per the description (None for a rejected stream)."""
    return [stream_remote(description, media) for media in description.media]


def stream_remote(description: SessionDescription, media: Media) -> Remote | None:
    """RTP to the m= port, RTCP where RFC 3605 a=rtcp says, else on the port after RTP's
    (RFC 3550 11). An a=rtcp-mux does not change it: a multiplexed stream sends its RTCP
    from and to the RTP ports anyway, and an offer's rtcp-mux the answer declines leaves the
    offerer's RTCP here (RFC 5761 5.1.3)."""
    address = description.connection_address(media)
    if media.rejected or address is None:
        return None
    rtp = (address, media.port)
    stated = media.attribute("rtcp")
    if stated:
        rtcp = parse_rtcp(stated)
        return Remote(rtp, (rtcp.address or address, rtcp.port))
    return Remote(rtp, (address, media.port + 1))
