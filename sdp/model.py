"""The SDP model: every line kept, in order, with typed views over the ones offer/answer
needs. A description parsed and written back unchanged is the same text (modulo line
endings); edits go through methods that change lines in place."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sdp.attributes import (
    Crypto,
    MediaBandwidth,
    RemoteCandidate,
    RtpMap,
    SsrcRange,
    parse_crypto,
    parse_mediabw,
    parse_remote_candidates,
    parse_rtpmap,
    parse_ssrc_range,
)

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
# RFC 3551 static payload types a description may use without an rtpmap.
STATIC = {
    0: RtpMap(0, "PCMU", 8000), 3: RtpMap(3, "GSM", 8000), 4: RtpMap(4, "G723", 8000),
    8: RtpMap(8, "PCMA", 8000), 9: RtpMap(9, "G722", 8000), 13: RtpMap(13, "CN", 8000),
    18: RtpMap(18, "G729", 8000), 34: RtpMap(34, "H263", 90000),
}
# RFC 8866 5: the order of line types in the session part and in a media part.
SESSION_ORDER = "vosiuepcbtrzka"
MEDIA_ORDER = "micbka"


@dataclass(frozen=True, slots=True)
class Line:
    kind: str  # the one-letter type
    value: str
    number: int = 0  # 1-based line in the parsed text; 0 for lines we added

    def __str__(self) -> str:
        return f"{self.kind}={self.value}"

    @property
    def attribute(self) -> tuple[str, str | None]:
        """For an a= line: (name, value or None for a property attribute)."""
        name, colon, value = self.value.partition(":")
        return name, (value if colon else None)


class Section:
    """The session part or one media part: its lines, and attribute helpers."""

    __slots__ = ("lines",)
    order = SESSION_ORDER

    def __init__(self, lines: list[Line]) -> None:
        self.lines = lines

    def attribute_lines(self, name: str) -> Iterator[tuple[Line, str | None]]:
        for line in self.lines:
            if line.kind == "a":
                key, value = line.attribute
                if key == name:
                    yield line, value

    def attributes(self, name: str) -> list[str]:
        """The values of every `a=name:value` ('' for `a=name`)."""
        return [value or "" for _, value in self.attribute_lines(name)]

    def attribute(self, name: str) -> str | None:
        return next((value or "" for _, value in self.attribute_lines(name)), None)

    def has(self, name: str) -> bool:
        return next(self.attribute_lines(name), None) is not None

    def add_attribute(self, name: str, value: str | None = None) -> None:
        self.insert(Line("a", name if value is None else f"{name}:{value}"))

    def set_attribute(self, name: str, value: str | None = None) -> None:
        """Replace the first `a=name` in place (dropping later ones), or add it."""
        text = name if value is None else f"{name}:{value}"
        found = False
        kept: list[Line] = []
        for line in self.lines:
            if line.kind == "a" and line.attribute[0] == name:
                if found:
                    continue
                found = True
                line = Line("a", text, line.number)
            kept.append(line)
        self.lines[:] = kept
        if not found:
            self.add_attribute(name, value)

    def remove_attribute(self, name: str) -> None:
        self.lines[:] = [ln for ln in self.lines
                         if not (ln.kind == "a" and ln.attribute[0] == name)]

    def values(self, kind: str) -> list[str]:
        return [line.value for line in self.lines if line.kind == kind]

    def insert(self, new: Line) -> None:
        """Add a line where RFC 8866 orders its type: after the last line of the same or an
        earlier type."""
        rank = self.order.find(new.kind)
        at = len(self.lines)
        for i, line in enumerate(self.lines):
            if self.order.find(line.kind) > rank:
                at = i
                break
        self.lines.insert(at, new)

    def set_bandwidth(self, kind: str, value: int | None) -> None:
        """`b=<kind>:<value>` replaced, added, or (None) removed."""
        self.lines[:] = [ln for ln in self.lines
                         if not (ln.kind == "b" and ln.value.split(":", 1)[0] == kind)]
        if value is not None:
            self.insert(Line("b", f"{kind}:{value}"))

    def bandwidth(self, kind: str) -> int | None:
        for value in self.values("b"):
            name, _, number = value.partition(":")
            if name == kind and number.isdigit():
                return int(number)
        return None

    @property
    def direction(self) -> str | None:
        return next((d for d in DIRECTIONS if self.has(d)), None)

    def set_direction(self, direction: str) -> None:
        for other in DIRECTIONS:
            if other != direction:
                self.remove_attribute(other)
        self.set_attribute(direction)

    @property
    def connection_address(self) -> str | None:
        value = next(iter(self.values("c")), None)
        return None if value is None else value.split()[2].split("/", 1)[0]


class Media(Section):
    """One m= section; `lines[0]` is the m= line."""

    __slots__ = ()
    order = MEDIA_ORDER

    @property
    def _m(self) -> list[str]:
        return self.lines[0].value.split()

    @property
    def media(self) -> str:
        return self._m[0]

    @property
    def port(self) -> int:
        return int(self._m[1].split("/", 1)[0])

    @property
    def proto(self) -> str:
        return self._m[2]

    @property
    def formats(self) -> list[str]:
        return self._m[3:]

    def set_port(self, port: int) -> None:
        parts = self._m
        parts[1] = str(port)
        self.lines[0] = Line("m", " ".join(parts), self.lines[0].number)

    def set_formats(self, formats: list[str]) -> None:
        parts = self._m[:3] + formats
        self.lines[0] = Line("m", " ".join(parts), self.lines[0].number)

    def set_proto(self, proto: str) -> None:
        parts = self._m
        parts[2] = proto
        self.lines[0] = Line("m", " ".join(parts), self.lines[0].number)

    def rtpmaps(self) -> dict[int, RtpMap]:
        out = {pt: STATIC[pt] for pt in (int(f) for f in self.formats if f.isdigit())
               if pt in STATIC}
        for value in self.attributes("rtpmap"):
            rtpmap = parse_rtpmap(value)
            out[rtpmap.payload_type] = rtpmap
        return out

    def fmtp(self, payload_type: int) -> str | None:
        for value in self.attributes("fmtp"):
            pt, _, params = value.partition(" ")
            if pt == str(payload_type):
                return params
        return None

    def cryptos(self) -> list[Crypto]:
        return [parse_crypto(v) for v in self.attributes("crypto")]

    def media_bandwidths(self) -> list[MediaBandwidth]:
        return [parse_mediabw(v) for v in self.attributes("x-mediabw")]

    def ssrc_range(self) -> SsrcRange | None:
        value = self.attribute("x-ssrc-range")
        return None if value is None else parse_ssrc_range(value)

    def remote_candidates(self) -> tuple[RemoteCandidate, ...]:
        value = self.attribute("remote-candidates")
        return () if value is None else parse_remote_candidates(value)

    @property
    def label(self) -> str | None:
        """What the stream carries in Lync's terms: `a=label:` (main-video,
        applicationsharing, panoramic-video) or, failing that, `a=x-source:`."""
        return self.attribute("label") or self.attribute("x-source")

    @property
    def mid(self) -> str | None:
        return self.attribute("mid")

    @property
    def rejected(self) -> bool:
        return self.port == 0

    @property
    def secure(self) -> bool:
        return "SAVP" in self.proto


@dataclass(slots=True)
class SessionDescription:
    session: Section
    media: list[Media]

    def copy(self) -> SessionDescription:
        """An independent copy: edits replace lines (which are immutable), so copying the
        line lists is enough; a deep copy cost a millisecond of every anchored call."""
        return SessionDescription(Section(list(self.session.lines)),
                                  [Media(list(m.lines)) for m in self.media])

    def lines(self) -> Iterator[Line]:
        yield from self.session.lines
        for media in self.media:
            yield from media.lines

    def to_text(self, eol: str = "\r\n") -> str:
        return eol.join(str(line) for line in self.lines()) + eol

    def to_bytes(self) -> bytes:
        return self.to_text().encode("utf-8")

    def connection_address(self, media: Media) -> str | None:
        """The media's own c= address, else the session's."""
        return media.connection_address or self.session.connection_address

    @property
    def origin(self) -> list[str]:
        return self.session.values("o")[0].split()
