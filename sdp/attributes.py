"""Typed views of the attribute lines offer/answer and Lync interop need. Each `parse_*`
takes an attribute's value (after `a=name:`) and raises ValueError with the rule broken;
the SDP parser turns that into an SdpError naming the line."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RtpMap:
    payload_type: int
    encoding: str
    clock_rate: int
    channels: int | None = None

    def __str__(self) -> str:
        extra = f"/{self.channels}" if self.channels is not None else ""
        return f"{self.payload_type} {self.encoding}/{self.clock_rate}{extra}"


def parse_rtpmap(value: str) -> RtpMap:
    m = re.fullmatch(r"(\d{1,3}) ([^/\s]+)/(\d+)(?:/(\d+))?", value.strip())
    if m is None or int(m[1]) > 127:
        raise ValueError("rtpmap must be '<payload type 0-127> <encoding>/<clock>[/<channels>]'")
    return RtpMap(int(m[1]), m[2], int(m[3]), int(m[4]) if m[4] else None)


@dataclass(frozen=True, slots=True)
class Crypto:
    """RFC 4568 `a=crypto:<tag> <suite> <key-params> [<session-params>]`."""

    tag: int
    suite: str
    key_params: str  # inline:<key||lifetime|mki:len>
    session_params: str = ""

    @property
    def key(self) -> str:
        """The base64 master key and salt of the first inline key parameter."""
        return self.key_params.split(";", 1)[0].removeprefix("inline:").split("|", 1)[0]

    def __str__(self) -> str:
        tail = f" {self.session_params}" if self.session_params else ""
        return f"{self.tag} {self.suite} {self.key_params}{tail}"


def parse_crypto(value: str) -> Crypto:
    parts = value.split(None, 3)
    if len(parts) < 3 or not parts[0].isdigit() or not parts[2].startswith("inline:"):
        raise ValueError("crypto must be '<tag> <suite> inline:<key>...'")
    return Crypto(int(parts[0]), parts[1], parts[2], parts[3] if len(parts) > 3 else "")


@dataclass(frozen=True, slots=True)
class CryptoScale:
    """Lync's `a=cryptoscale:<scale> <role> <suite> <key-params>`."""

    scale: int
    role: str
    suite: str
    key_params: str


def parse_cryptoscale(value: str) -> CryptoScale:
    parts = value.split()
    if len(parts) != 4 or not parts[0].isdigit():
        raise ValueError("cryptoscale must be '<scale> <role> <suite> <key-params>'")
    return CryptoScale(int(parts[0]), parts[1], parts[2], parts[3])


@dataclass(frozen=True, slots=True)
class MediaBandwidth:
    """Lync's `a=x-mediabw:<media> send=<kbps>;recv=<kbps>`."""

    media: str
    send: int
    recv: int

    def __str__(self) -> str:
        return f"{self.media} send={self.send};recv={self.recv}"


def parse_mediabw(value: str) -> MediaBandwidth:
    m = re.fullmatch(r"(\S+) send=(\d+);recv=(\d+)", value.strip())
    if m is None:
        raise ValueError("x-mediabw must be '<media> send=<kbps>;recv=<kbps>'")
    return MediaBandwidth(m[1], int(m[2]), int(m[3]))


@dataclass(frozen=True, slots=True)
class SsrcRange:
    first: int
    last: int

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"


def parse_ssrc_range(value: str) -> SsrcRange:
    m = re.fullmatch(r"(\d+)-(\d+)", value.strip())
    if m is None or int(m[1]) > int(m[2]) or int(m[2]) > 0xFFFFFFFF:
        raise ValueError("x-ssrc-range must be '<first>-<last>' with first <= last < 2^32")
    return SsrcRange(int(m[1]), int(m[2]))


@dataclass(frozen=True, slots=True)
class RtcpFeedback:
    payload_type: str  # a number or '*'
    kind: str  # nack, ccm, x-message ...
    params: str = ""


def parse_rtcp_fb(value: str) -> RtcpFeedback:
    parts = value.split(None, 2)
    if len(parts) < 2 or not (parts[0] == "*" or parts[0].isdigit()):
        raise ValueError("rtcp-fb must be '<payload type|*> <type> [<parameters>]'")
    return RtcpFeedback(parts[0], parts[1], parts[2] if len(parts) > 2 else "")


@dataclass(frozen=True, slots=True)
class Rtcp:
    """RFC 3605 `a=rtcp:<port> [IN IP4|IP6 <address>]`."""

    port: int
    address: str | None = None


def parse_rtcp(value: str) -> Rtcp:
    parts = value.split()
    if not parts or not parts[0].isdigit() or int(parts[0]) > 65535 or len(parts) not in (1, 4):
        raise ValueError("rtcp must be '<port> [IN IP4|IP6 <address>]'")
    return Rtcp(int(parts[0]), parts[3] if len(parts) == 4 else None)


@dataclass(frozen=True, slots=True)
class VideoCaps:
    """Lync's `a=x-caps:<pt> <id>:<width>:<height>:<fps>:<bitrate>:<n>;...`: the video
    resolutions a payload type can send."""

    payload_type: int
    modes: tuple[tuple[int, int, int, float, int], ...]  # (id, width, height, fps, bps)


def parse_x_caps(value: str) -> VideoCaps:
    pt, _, rest = value.strip().partition(" ")
    if not pt.isdigit() or not rest:
        raise ValueError("x-caps must be '<payload type> <id>:<w>:<h>:<fps>:<bps>:<n>;...'")
    modes = []
    for item in rest.split(";"):
        fields = item.split(":")
        try:
            modes.append((int(fields[0]), int(fields[1]), int(fields[2]), float(fields[3]),
                          int(fields[4])))
        except (IndexError, ValueError):
            raise ValueError(
                f"x-caps mode {item!r} is not '<id>:<w>:<h>:<fps>:<bps>:<n>'"
            ) from None
    return VideoCaps(int(pt), tuple(modes))


@dataclass(frozen=True, slots=True)
class Group:
    """RFC 5888 `a=group:<semantics> <mid> ...` (BUNDLE, LS ...)."""

    semantics: str
    mids: tuple[str, ...]


def parse_group(value: str) -> Group:
    parts = value.split()
    if not parts:
        raise ValueError("group must be '<semantics> <mid> ...'")
    return Group(parts[0], tuple(parts[1:]))


@dataclass(frozen=True, slots=True)
class RemoteCandidate:
    """One entry of RFC 5245 `a=remote-candidates:<component> <address> <port> ...`: the
    pair the controlling agent selected, which the second offer to Lync names."""

    component: int
    address: str
    port: int


def parse_remote_candidates(value: str) -> tuple[RemoteCandidate, ...]:
    parts = value.split()
    if not parts or len(parts) % 3:
        raise ValueError("remote-candidates must be '<component> <address> <port> ...'")
    out = []
    for component, address, port in zip(parts[::3], parts[1::3], parts[2::3], strict=True):
        if not (component.isascii() and component.isdigit() and port.isascii()
                and port.isdigit() and int(port) <= 65535):
            raise ValueError(f"remote candidate '{component} {address} {port}' is not "
                             "'<component> <address> <port>'")
        out.append(RemoteCandidate(int(component), address, int(port)))
    return tuple(out)


# The attribute names the parser checks, and how.
CHECKED = {
    "rtpmap": parse_rtpmap,
    "crypto": parse_crypto,
    "cryptoscale": parse_cryptoscale,
    "x-mediabw": parse_mediabw,
    "x-ssrc-range": parse_ssrc_range,
    "rtcp-fb": parse_rtcp_fb,
    "rtcp": parse_rtcp,
    "x-caps": parse_x_caps,
    "group": parse_group,
    "remote-candidates": parse_remote_candidates,
}
