"""The conferencing package's errors. As in `gateway.sip.errors`, each carries the answer
the SIP caller gets when it ends a meeting join (`status_hint`, `reason`), so call control
refuses without guessing a status."""

from __future__ import annotations


class ConferencingError(Exception):
    """Base of every error raised by `gateway.conferencing`."""

    def __init__(self, status_hint: int, reason: str) -> None:
        super().__init__(f"{status_hint} {reason}")
        self.status_hint = status_hint
        self.reason = reason


class MalformedDocument(ConferencingError):
    """A focus or MCU answered with XML that is not a document we can read: the meeting's
    side is at fault, so the caller is told 502."""

    def __init__(self, what: str) -> None:
        super().__init__(502, f"Bad Gateway (malformed {what})")


class ConferenceNotFound(ConferencingError):
    """The Lync server knows no meeting by that Conference ID (never issued, or expired)."""

    def __init__(self, conference_id: str, why: str) -> None:
        super().__init__(404, f"Not Found (no Lync meeting with Conference ID "
                              f"{conference_id}: {why})")
        self.conference_id = conference_id


class JoinRefused(ConferencingError):
    """The focus or MCU refused us: denied in the lobby, or a C3P failure to addUser."""

    def __init__(self, why: str) -> None:
        super().__init__(403, f"Forbidden ({why})")


class LookupUnavailable(ConferencingError):
    """The Lync server could not answer the look-up now (its own failure): try later."""

    def __init__(self, why: str) -> None:
        super().__init__(503, f"Service Unavailable (Conference ID look-up: {why})")
