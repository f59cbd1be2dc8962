"""Errors of the SDP package."""

from __future__ import annotations


class SdpError(Exception):
    """SDP that breaks a rule; `line` is the 1-based line number (0: not tied to a line).
    `status` is the SIP answer an offer with this fault gets (488 Not Acceptable Here)."""

    status_hint = 488

    def __init__(self, line: int, rule: str) -> None:
        self.line = line
        self.rule = rule
        where = f"line {line}: " if line else ""
        super().__init__(f"{where}{rule}")


class NotAcceptable(SdpError):
    """An offer that parses but cannot be answered (no common codec, SRTP required but not
    offered, ...): 488 with the reason."""

    def __init__(self, rule: str) -> None:
        super().__init__(0, rule)
