"""Cutting a TCP/TLS byte stream into SIP messages (RFC 3261 section 18.3, RFC 5626 3.5.1).

Sans-I/O: `feed(bytes)` returns complete messages and keep-alive pings. A stream message must
carry Content-Length; without it the framing is lost, so the framer reports the error once and
refuses more input (the connection is closed after the error response goes out).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.transport.errors import FramingError

# The largest SIP message this node reads, over any transport (the parser applies it to
# datagrams; the framer to stream messages before buffering more).
MAX_MESSAGE = 64 * 1024
_CONTENT_LENGTH = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*([0-9]*)[ \t]*\r?$", re.I | re.M)


@dataclass(frozen=True, slots=True)
class Ping:
    """A double-CRLF keep-alive; answer it with a single CRLF (pong)."""


@dataclass(frozen=True, slots=True)
class Framed:
    data: bytes


@dataclass(frozen=True, slots=True)
class Unframed:
    """What was read of the broken message, and the error to answer it with."""

    data: bytes
    error: FramingError


Item = Framed | Ping | Unframed


class StreamFramer:
    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self._buf = bytearray()
        self._max = max_message
        self.broken = False

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Item]:
        if self.broken:
            return []
        buf = self._buf
        buf += data
        out: list[Item] = []
        while buf:
            # Keep-alives and stray line ends between messages.
            if buf[0] in (13, 10):
                if buf.startswith(b"\r\n\r\n"):
                    del buf[:4]
                    out.append(Ping())
                    continue
                if bytes(buf) in (b"\r", b"\r\n", b"\r\n\r"):
                    break  # may become a ping
                del buf[: 2 if buf.startswith(b"\r\n") else 1]
                continue
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > self._max:
                    out.append(self._fail(FramingError(513, "Message Too Large (headers)")))
                break
            head = bytes(buf[: end + 4])
            lengths = _CONTENT_LENGTH.findall(head)
            if not lengths:
                out.append(self._fail(FramingError(400, "Missing header: Content-Length")))
                break
            if len(set(lengths)) > 1 or not lengths[0] or len(lengths[0]) > 6:
                out.append(self._fail(FramingError(400, "Bad header: Content-Length")))
                break
            total = end + 4 + int(lengths[0])
            if total > self._max:
                out.append(self._fail(FramingError(513, "Message Too Large")))
                break
            if len(buf) < total:
                break
            out.append(Framed(bytes(buf[:total])))
            del buf[:total]
        return out

    def _fail(self, error: FramingError) -> Unframed:
        self.broken = True
        data = bytes(self._buf)
        self._buf.clear()
        return Unframed(data, error)
