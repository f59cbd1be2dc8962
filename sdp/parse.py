"""Parsing SDP: every line kept, the ones with a syntax checked, errors naming the line."""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

from sdp.attributes import CHECKED
from sdp.errors import SdpError
from sdp.model import Line, Media, Section, SessionDescription

_LINE = re.compile(r"([a-z])=(.*)")
_MEDIA = re.compile(r"(\S+) (\d+)(?:/(\d+))? (\S+)((?: \S+)*)")
MAX_SDP = 64 * 1024


def parse_sdp(data: str | bytes) -> SessionDescription:
    if isinstance(data, bytes):
        if len(data) > MAX_SDP:
            raise SdpError(0, f"SDP larger than {MAX_SDP} bytes")
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SdpError(0, f"not UTF-8 text ({exc.reason})") from None
    texts = data.replace("\r\n", "\n").split("\n")
    while texts and texts[-1] == "":
        texts.pop()
    if not texts:
        raise SdpError(0, "empty SDP")
    session: list[Line] = []
    media: list[Media] = []
    current = session
    for number, text in enumerate(texts, 1):
        m = _LINE.fullmatch(text.rstrip("\r"))
        if m is None:
            raise SdpError(number, "expected '<type>=<value>' with a lower-case type letter")
        line = Line(m[1], m[2], number)
        _check(line, number, in_media=current is not session)
        if line.kind == "m":
            media.append(Media([line]))
            current = media[-1].lines
        else:
            current.append(line)
    _check_session(Section(session))
    return SessionDescription(Section(session), media)


def _check_session(session: Section) -> None:
    kinds = [line.kind for line in session.lines]
    if not kinds or kinds[0] != "v":
        raise SdpError(1, "the first line must be v=0")
    if session.lines[0].value != "0":
        raise SdpError(1, "only SDP version 0 exists (v=0)")
    for kind, what in (("o", "an origin (o=)"), ("s", "a session name (s=)")):
        if kind not in kinds:
            raise SdpError(0, f"the session part needs {what}")


def _check(line: Line, number: int, *, in_media: bool) -> None:
    kind, value = line.kind, line.value
    if kind == "m":
        m = _MEDIA.fullmatch(value)
        if m is None or not m[5]:
            raise SdpError(number, "m= must be '<media> <port>[/<count>] <proto> <format> ...'")
        if int(m[2]) > 65535:
            raise SdpError(number, f"port {m[2]} is out of range 0..65535")
    elif kind == "o":
        if len(value.split()) != 6:
            raise SdpError(number, "o= must be '<username> <sess-id> <sess-version> IN "
                           "<IP4|IP6> <address>'")
    elif kind == "c":
        _check_connection(value, number)
    elif kind == "v" and in_media:
        raise SdpError(number, "v= belongs at the start of the session part")
    elif kind == "a":
        name, _, attr = value.partition(":")
        parse = CHECKED.get(name)
        if parse is not None:
            try:
                parse(attr)
            except ValueError as exc:
                raise SdpError(number, str(exc)) from None


def _check_connection(value: str, number: int) -> None:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError(number, "c= must be 'IN <IP4|IP6> <address>'")
    address = parts[2].split("/", 1)[0]
    version = _ip_version(address)
    if version is None:
        return  # an FQDN is allowed (RFC 8866 5.7)
    if (version == 4) != (parts[1] == "IP4"):
        raise SdpError(number, f"{address} is not an {parts[1]} address")


@lru_cache(maxsize=4096)  # the same few addresses in every call's SDP; ipaddress is slow
def _ip_version(address: str) -> int | None:
    try:
        return ipaddress.ip_address(address).version
    except ValueError:
        return None
