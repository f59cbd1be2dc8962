"""The SIP core's exception hierarchy. Every error carries the answer it maps to: as in h11
(`ProtocolError.error_status_hint`), `status_hint` and `reason` are what a request that
raised it is refused with, so no caller guesses a status."""

from __future__ import annotations


class SipError(Exception):
    """Base of every error raised by `gateway.sip`."""

    def __init__(self, status_hint: int, reason: str) -> None:
        super().__init__(f"{status_hint} {reason}")
        self.status_hint = status_hint
        self.reason = reason


class SipParseError(SipError):
    """Bytes that are not a SIP message we can process.

    The hint is what to answer when the message was a request whose Via, From, To, Call-ID
    and CSeq could still be read (see `gateway.sip.parse.error_response`); a response or
    unreadable garbage is dropped instead, as RFC 3261 section 18 allows.
    """


class SipRequestError(SipError):
    """A well-formed request the node must refuse (RFC 3261 section 8.2), with the headers
    the refusal carries (Min-SE on 422, Unsupported on 420, ...)."""

    def __init__(self, status_hint: int, reason: str,
                 headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(status_hint, reason)
        self.headers = headers
