"""The transport's exception hierarchy. Like every package root here it carries the SIP
answer the fault maps to (`status_hint`, `reason`), translated in one place
(`gateway.sip.errors.refusal`)."""

from __future__ import annotations


class TransportError(Exception):
    """Base of every error raised by `gateway.transport`."""

    status_hint = 500

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FramingError(TransportError):
    """A TCP/TLS byte stream that cannot be cut into messages: the framing is lost, so the
    connection ends after the answer goes out."""

    def __init__(self, status_hint: int, reason: str) -> None:
        super().__init__(reason)
        self.status_hint = status_hint
