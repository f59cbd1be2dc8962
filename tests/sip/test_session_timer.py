"""Session timers (RFC 4028) as the gateway negotiates them on each leg: the UAS answer
(who refreshes, Require: timer, 422 below Min-SE), the UAC side's reading of a 2xx and of a
422, and the deadlines a leg timer sets."""

from __future__ import annotations

import pytest

from gateway.sip.errors import SipRequestError
from gateway.sip.message import Request, make_response
from gateway.sip.parse import parse_message
from gateway.sip.session_timer import (
    LegTimer,
    TimerPolicy,
    answer_as_uas,
    retry_interval,
    uac_headers,
    uac_result,
)


def invite(extra: str = "") -> Request:
    message = parse_message(
        ("INVITE sip:room@gw.example.com SIP/2.0\r\n"
         "Via: SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bK-st1\r\n"
         "From: <sip:alice@example.com>;tag=a\r\nTo: <sip:room@gw.example.com>\r\n"
         "Call-ID: st-1\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@192.0.2.1>\r\n"
         f"Max-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


POLICY = TimerPolicy(interval=1800, min_se=90)


def test_a_lync_style_request_makes_the_caller_the_refresher() -> None:
    session = answer_as_uas(invite("Supported: timer\r\nSession-Expires: 1800\r\n"), POLICY)
    assert session is not None
    assert session.headers == (("Session-Expires", "1800;refresher=uac"), ("Require", "timer"))
    assert session.leg(10.0) == LegTimer(1800, we_refresh=False, since=10.0)


def test_the_refresher_the_caller_names_is_kept_and_a_long_interval_is_shortened() -> None:
    session = answer_as_uas(
        invite("Supported: timer\r\nSession-Expires: 7200;refresher=uas\r\n"), POLICY)
    assert session is not None and session.refresher == "uas" and session.interval == 1800
    assert session.leg(0.0).we_refresh


def test_a_caller_without_timer_support_is_refreshed_by_us_without_require() -> None:
    """A proxy may add Session-Expires for a UA that cannot refresh; and a UA that knows
    nothing of timers still gets one, refreshed by re-INVITEs it understands (RFC 4028 9)."""
    for extra in ("Session-Expires: 1200\r\n", ""):
        session = answer_as_uas(invite(extra), POLICY)
        assert session is not None
        assert session.refresher == "uas" and not session.require_timer
        assert ("Require", "timer") not in session.headers


def test_supported_timer_without_a_request_gets_our_interval_refreshed_by_the_caller() -> None:
    session = answer_as_uas(invite("Supported: timer\r\n"), POLICY)
    assert session is not None and (session.interval, session.refresher) == (1800, "uac")


def test_no_timer_when_neither_side_asks() -> None:
    assert answer_as_uas(invite(), TimerPolicy(interval=0)) is None


def test_an_interval_below_our_min_se_is_refused_with_422() -> None:
    with pytest.raises(SipRequestError) as refused:
        answer_as_uas(invite("Supported: timer\r\nSession-Expires: 30\r\n"), POLICY)
    assert refused.value.status_hint == 422 and refused.value.headers == (("Min-SE", "90"),)


def test_the_callers_min_se_is_a_floor_for_the_interval() -> None:
    session = answer_as_uas(
        invite("Supported: timer\r\nSession-Expires: 3600\r\nMin-SE: 2400\r\n"), POLICY)
    assert session is not None and session.interval == 2400


def test_uac_side_reads_who_refreshes_from_the_2xx() -> None:
    request = invite()
    ours = make_response(request, 200, to_tag="b",
                         headers=(("Session-Expires", "600;refresher=uac"),))
    theirs = make_response(request, 200, to_tag="b",
                           headers=(("Session-Expires", "600;refresher=uas"),))
    assert uac_result(ours, 5.0) == LegTimer(600, we_refresh=True, since=5.0)
    assert uac_result(theirs, 5.0) == LegTimer(600, we_refresh=False, since=5.0)
    assert uac_result(make_response(request, 200, to_tag="b"), 5.0) is None


def test_a_422_asks_again_with_its_min_se_and_never_loops() -> None:
    too_small = make_response(invite(), 422, to_tag="b", headers=(("Min-SE", "1200"),))
    assert retry_interval(too_small, 90) == 1200
    assert retry_interval(too_small, 1200) is None
    assert uac_headers(1200, 90, refresher=True) == (
        ("Session-Expires", "1200;refresher=uac"), ("Min-SE", "90"))


def test_deadlines_refresh_at_half_and_give_up_before_expiry() -> None:
    ours = LegTimer(1800, we_refresh=True, since=100.0)
    assert ours.deadline() == 1000.0
    ours.pending = True  # our refresh is out: now only expiry matters
    assert ours.deadline() == 100.0 + 1800 - 32
    assert LegTimer(60, we_refresh=False, since=0.0).deadline() == 40.0  # SE/3 < 32 s
