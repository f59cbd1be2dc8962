"""The SIP core's exception hierarchy. Every error that can be answered carries its response."""

from __future__ import annotations


class SipError(Exception):
    """Base of every error raised by `gateway.sip`."""


class SipParseError(SipError):
    """Bytes that are not a SIP message we can process.

    `status` and `reason` are what to answer when the message was a request whose Via, From,
    To, Call-ID and CSeq could still be read (see `gateway.sip.parse.error_response`); a
    response or unreadable garbage is dropped instead, as RFC 3261 section 18 allows.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


class SipRequestError(SipError):
    """A well-formed request the node must refuse (RFC 3261 section 8.2)."""

    def __init__(self, status: int, reason: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.headers = headers
