"""Session timers (RFC 4028): what one side of a dialog agrees to, and when the session
must be refreshed or given up on.

A B2BUA is a full user agent on each leg, so each leg negotiates its own timer: the gateway
answers the caller's INVITE as a UAS and asks the callee as a UAC. `LegTimer` then says when
the gateway must refresh (it is the refresher: half the interval) or when it must give up on
a peer that stopped refreshing (the interval less min(32 s, a third of it), RFC 4028 10).
Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.sip.errors import SipParseError, SipRequestError
from gateway.sip.headers import parse_uint
from gateway.sip.message import Request, Response

RFC_MIN_SE = 90  # RFC 4028 4: no interval below 90 s unless a lab asks for it


@dataclass(frozen=True, slots=True)
class TimerPolicy:
    """The node's side of the negotiation (0 interval: never asks for a timer itself)."""

    interval: int = 1800  # what Lync uses, so its refreshes match ours
    min_se: int = RFC_MIN_SE


@dataclass(slots=True)
class LegTimer:
    interval: int  # agreed Session-Expires, seconds
    we_refresh: bool  # the gateway is this leg's refresher
    since: float  # the last successful refresh (or the answer that set the timer up)
    pending: bool = False  # our refresh is in flight

    def deadline(self) -> float:
        """When the gateway must act: send a refresh, or give up on the session."""
        if self.we_refresh and not self.pending:
            return self.since + self.interval / 2
        return self.since + self.interval - min(32.0, self.interval / 3)


@dataclass(frozen=True, slots=True)
class UasTimer:
    """The UAS's answer to a request: headers for the 2xx, and who refreshes."""

    interval: int
    refresher: str  # "uac" | "uas"
    require_timer: bool

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        expires = (("Session-Expires", f"{self.interval};refresher={self.refresher}"),)
        return expires + ((("Require", "timer"),) if self.require_timer else ())

    def leg(self, now: float) -> LegTimer:
        return LegTimer(self.interval, we_refresh=self.refresher == "uas", since=now)


def _min_se(message: Request | Response) -> int:
    value = message.headers.get("Min-SE")
    if value is None:
        return 0
    try:
        return parse_uint(value.partition(";")[0], "Min-SE")
    except SipParseError:
        return 0


def answer_as_uas(request: Request, policy: TimerPolicy) -> UasTimer | None:
    """RFC 4028 9: the timer the gateway's 2xx sets up for `request` (an INVITE or a
    refresh), or None for no timer. Raises `SipRequestError(422)` with our Min-SE for an
    interval below it."""
    expires = request.session_expires
    supported = "timer" in request.tokens("supported")
    floor = max(_min_se(request), policy.min_se)
    if expires is None:
        if policy.interval == 0:
            return None
        # Nobody asked, but the UAS may (RFC 4028 9): a UAC that can do timers refreshes;
        # one that cannot is refreshed by us with re-INVITEs, which every UA answers, so a
        # call whose BYE was lost does not hold its ports for ever.
        return UasTimer(max(policy.interval, floor), "uac" if supported else "uas",
                        supported)
    if expires.delta < policy.min_se:
        raise SipRequestError(422, "Session Interval Too Small",
                              headers=(("Min-SE", str(policy.min_se)),))
    refresher = expires.refresher or ("uac" if supported else "uas")
    if refresher == "uac" and not supported:
        refresher = "uas"  # a UAC that cannot do timers cannot be asked to refresh
    interval = min(expires.delta, policy.interval) if policy.interval else expires.delta
    return UasTimer(max(interval, floor), refresher, supported)


def uac_headers(interval: int, min_se: int, *, refresher: bool) -> tuple[tuple[str, str], ...]:
    """What a request of ours asks for; a refresh we send says we stay the refresher."""
    expires = f"{interval};refresher=uac" if refresher else str(interval)
    return (("Session-Expires", expires), ("Min-SE", str(min_se)))


def uac_result(response: Response, now: float) -> LegTimer | None:
    """RFC 4028 7.2: the timer a 2xx to our request sets; none when it carries no
    Session-Expires (the peer does not do timers, and nobody needs to refresh)."""
    try:
        expires = response.session_expires
    except SipParseError:
        return None
    if expires is None:
        return None
    return LegTimer(expires.delta, we_refresh=expires.refresher != "uas", since=now)


def retry_interval(response: Response, asked: int) -> int | None:
    """RFC 4028 7.3: the interval to ask again with after a 422, or None to give up."""
    wanted = _min_se(response)
    return wanted if wanted > asked else None
