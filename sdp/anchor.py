"""Rewriting a description so its media goes through the node: every c= to the node's
address, each accepted m= to the relay port for that stream, a=rtcp to the port after it.
Everything else (codecs, crypto, directions, unknown lines) stays as the peer wrote it."""

from __future__ import annotations

import copy

from sdp.model import Line, SessionDescription


def anchored(description: SessionDescription, address: str,
             ports: list[int]) -> SessionDescription:
    """A copy of `description` pointing at `address` and `ports[i]` for stream i; rejected
    streams (port 0) stay rejected."""
    if len(ports) != len(description.media):
        raise ValueError(f"{len(ports)} ports for {len(description.media)} streams")
    out = copy.deepcopy(description)
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
            media.set_attribute("rtcp", str(port + 1))
    return out


def _null(connection: str) -> bool:
    return connection.split()[-1:] in (["0.0.0.0"], ["::"])


def remote_addresses(description: SessionDescription) -> list[tuple[str, int] | None]:
    """Where each stream's RTP goes per the description (None for a rejected stream)."""
    out: list[tuple[str, int] | None] = []
    for media in description.media:
        address = description.connection_address(media)
        out.append(None if media.rejected or address is None else (address, media.port))
    return out
