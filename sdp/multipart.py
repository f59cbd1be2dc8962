"""multipart/alternative and multipart/mixed bodies (RFC 2046) as Lync sends them: an SDP
for draft-6 ICE clients marked `ms-proxy-2007fallback`, and the RFC 5245 one to answer."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sdp.errors import SdpError

FALLBACK = "ms-proxy-2007fallback"


@dataclass(frozen=True, slots=True)
class Part:
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((v for k, v in self.headers if k.lower() == wanted), None)

    @property
    def content_type(self) -> str:
        return (self.header("Content-Type") or "text/plain").split(";", 1)[0].strip().lower()

    @property
    def is_fallback(self) -> bool:
        """The draft-6 ICE offer Lync 2013/SfB include for older clients."""
        disposition = (self.header("Content-Disposition") or "").lower()
        return FALLBACK in disposition


def split(body: bytes, boundary: str) -> list[Part]:
    """The parts of a multipart body; the preamble and epilogue are dropped."""
    if not boundary or len(boundary) > 70:
        raise SdpError(0, "multipart body without a usable boundary parameter")
    delimiter = b"--" + boundary.encode("ascii", "replace")
    chunks = body.split(delimiter)
    if len(chunks) < 3:
        raise SdpError(0, f"multipart body has no part delimited by --{boundary}")
    parts: list[Part] = []
    closed = False
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            closed = True
            break
        parts.append(_part(chunk))
    if not closed:
        raise SdpError(0, f"multipart body is not closed by --{boundary}--")
    return parts


def _part(chunk: bytes) -> Part:
    chunk = chunk.removeprefix(b"\r\n").removeprefix(b"\n")
    # The CRLF before the next delimiter belongs to the delimiter (RFC 2046 5.1.1).
    chunk = chunk.removesuffix(b"\r\n") if chunk.endswith(b"\r\n") else chunk.removesuffix(b"\n")
    head, sep, body = chunk.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = chunk.partition(b"\n\n")
    if not sep:
        return Part((), chunk)  # no headers: text/plain by default
    headers = []
    for raw in head.decode("utf-8", "replace").replace("\r\n", "\n").split("\n"):
        name, colon, value = raw.partition(":")
        if not colon:
            raise SdpError(0, f"bad header line in a multipart part: {raw[:60]!r}")
        headers.append((name.strip(), value.strip()))
    return Part(tuple(headers), body)


def join(parts: list[Part], boundary: str | None = None) -> tuple[bytes, str]:
    """A multipart body and its boundary."""
    boundary = boundary or secrets.token_hex(16)
    out = bytearray()
    for part in parts:
        out += b"--" + boundary.encode() + b"\r\n"
        for name, value in part.headers:
            out += f"{name}: {value}\r\n".encode()
        out += b"\r\n" + part.body + b"\r\n"
    out += b"--" + boundary.encode() + b"--\r\n"
    return bytes(out), boundary


def pick_sdp(parts: list[Part]) -> Part:
    """The SDP to answer: the RFC 5245 ICE offer over the draft-6 fallback, else the first."""
    offers = [p for p in parts if p.content_type == "application/sdp"]
    if not offers:
        raise SdpError(0, "no application/sdp part in the multipart body")
    return next((p for p in offers if not p.is_fallback), offers[0])
