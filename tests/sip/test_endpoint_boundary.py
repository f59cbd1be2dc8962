"""Nothing raised while one message or tick is handled leaves the endpoint (issue 22): each
path a handler is called on, driven with a handler that raises."""

from __future__ import annotations

from typing import Any

import pytest
import structlog

from gateway.sip.endpoint import Endpoint, EndpointSettings
from gateway.sip.errors import SipParseError, SipRequestError
from gateway.sip.message import Request, Response
from gateway.sip.parse import parse_message
from gateway.sip.transaction_layer import Event, RequestReceived
from gateway.sip.transaction_machines import Send
from gateway.transport.peer import Peer, Transport

SRC = Peer(Transport.UDP, "198.51.100.7", 40123)
CALLEE = Peer(Transport.UDP, "203.0.113.5", 5060)


def invite(call_id: str = "boom-1", method: str = "INVITE") -> bytes:
    return (
        f"{method} sip:gw@192.0.2.1 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 10.1.1.1:5062;branch=z9hG4bK-b1;rport\r\n"
        "From: <sip:a@example.com>;tag=f1\r\nTo: <sip:gw@192.0.2.1>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


class Raising:
    """A call handler that fails the way it is told to, on the events it is told to."""

    methods = frozenset({"INVITE", "MESSAGE"})

    def __init__(self, exc: Exception, *, on: tuple[type, ...] = (RequestReceived,),
                 deadline: float | None = None) -> None:
        self.exc = exc
        self.on = on
        self.deadline = deadline
        self.seen: list[Event] = []
        self.sent: list[Event] = []

    def on_event(self, event: Event, now: float, core: Endpoint) -> list[Event]:
        self.seen.append(event)
        if isinstance(event, self.on):
            raise self.exc
        return []

    def next_deadline(self) -> float | None:
        return self.deadline

    def handle_timeout(self, now: float, core: Endpoint) -> list[Event]:
        if self.deadline is not None and now >= self.deadline:
            self.deadline = None
            raise self.exc
        return []

    def place(self, core: Endpoint, now: float) -> None:
        """Send a request of our own, so a response or a timeout has a transaction."""
        request = parse_message(invite("out-1", "MESSAGE"))
        assert isinstance(request, Request)
        _, events = core.send_request(request, CALLEE, now)
        self.sent.extend(events)


def sends(events: list[Event]) -> list[Response]:
    """The final responses sent (an INVITE's 100 Trying left out)."""
    out = []
    for event in events:
        assert isinstance(event, Send)
        message = parse_message(event.data)
        if isinstance(message, Response) and message.status >= 200:
            out.append(message)
    return out


def endpoint(handler: Raising) -> Endpoint:
    return Endpoint(EndpointSettings(server="lyncgate/test"), handler=handler)


def test_a_crash_handling_a_request_is_answered_500_logged_once_and_counted() -> None:
    handler = Raising(ZeroDivisionError("bug"))
    ep = endpoint(handler)
    with structlog.testing.capture_logs() as logs:
        out = sends(ep.receive(invite(), SRC, None, 0.0))
    assert [r.status for r in out] == [500]
    assert out[0].call_id == "boom-1" and out[0].to.tag
    errors = [e for e in logs if e["log_level"] == "error"]
    assert len(errors) == 1 and errors[0]["call_id"] == "boom-1"
    assert isinstance(errors[0]["exc_info"], ZeroDivisionError)
    assert ep.counters["internal_errors"] == 1
    # The 500 went through the transaction: a retransmission gets it again, and the
    # handler is not asked twice.
    again = sends(ep.receive(invite(), SRC, None, 0.1))
    assert [r.status for r in again] == [500] and len(handler.seen) == 1
    # And the node keeps serving.
    options = sends(ep.receive(invite("probe-1", "OPTIONS"), SRC, None, 0.2))
    assert [r.status for r in options] == [200]


def test_a_refusal_raised_by_the_handler_is_the_answer() -> None:
    """A SipError for a request still waiting is no crash: its status is the answer,
    with the headers a SipRequestError carries."""
    ep = endpoint(Raising(SipRequestError(420, "Bad Extension", (("Unsupported", "x"),))))
    with structlog.testing.capture_logs() as logs:
        (answer,) = sends(ep.receive(invite(), SRC, None, 0.0))
    assert (answer.status, answer.headers.get("Unsupported")) == (420, "x")
    assert not [e for e in logs if e["log_level"] == "error"]
    assert "internal_errors" not in ep.counters
    ep = endpoint(Raising(SipParseError(400, "Bad header: Contact")))
    (answer,) = sends(ep.receive(invite(), SRC, None, 0.0))
    assert (answer.status, answer.reason) == (400, "Bad header: Contact")


def test_a_crash_handling_a_response_is_logged_and_nothing_is_answered() -> None:
    """Issue 22's first finding: an exception raised while handling a *response* used to
    escape as an AssertionError. Responses are never answered; the error is logged with
    the Call-ID and counted."""
    handler = Raising(SipRequestError(400, "Contact required to set up a dialog"),
                      on=(object,))
    ep = endpoint(handler)
    handler.place(ep, 0.0)
    (request,) = handler.sent
    assert isinstance(request, Send)
    ok = parse_message(request.data)
    assert isinstance(ok, Request)
    data = (
        "SIP/2.0 200 OK\r\n"
        f"Via: {ok.headers.get('Via')}\r\nFrom: {ok.headers.get('From')}\r\n"
        f"To: {ok.headers.get('To')};tag=t9\r\nCall-ID: out-1\r\nCSeq: 1 MESSAGE\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    with structlog.testing.capture_logs() as logs:
        assert ep.receive(data, CALLEE, None, 0.1) == []
    (error,) = [e for e in logs if e["log_level"] == "error"]
    assert error["call_id"] == "out-1"
    assert ep.counters["internal_errors"] == 1


def test_a_crash_on_a_transaction_timeout_does_not_escape_handle_timeout() -> None:
    handler = Raising(RuntimeError("timeout handling"), on=(object,))
    ep = endpoint(handler)
    handler.place(ep, 0.0)
    with structlog.testing.capture_logs() as logs:
        for tick in range(0, 400):
            ep.handle_timeout(tick / 10)
    assert ep.counters["internal_errors"] >= 1
    assert {e["call_id"] for e in logs if e["log_level"] == "error"} == {"out-1"}


def test_a_crash_in_the_handlers_own_timers_does_not_escape_handle_timeout() -> None:
    handler = Raising(KeyError("session timer"), deadline=5.0)
    ep = endpoint(handler)
    assert ep.next_deadline() == 5.0
    with structlog.testing.capture_logs() as logs:
        assert ep.handle_timeout(5.0) == []
    assert ep.counters["internal_errors"] == 1
    assert [e["where"] for e in logs if e["log_level"] == "error"] == ["handler_timeout"]
    assert sends(ep.receive(invite("probe-1", "OPTIONS"), SRC, None, 6.0))[0].status == 200


def test_a_crash_on_a_transport_failure_does_not_escape() -> None:
    handler = Raising(ValueError("on failure"), on=(object,))
    ep = endpoint(handler)
    handler.place(ep, 0.0)
    with structlog.testing.capture_logs() as logs:
        assert ep.transport_failed(CALLEE, 0.1) == []
    assert ep.counters["internal_errors"] == 1
    assert [e["call_id"] for e in logs if e["log_level"] == "error"] == ["out-1"]


def test_a_crash_outside_the_handler_is_caught_at_receive(monkeypatch: pytest.MonkeyPatch) -> None:
    """The boundary holds for the core's own code as well: a bug in the transaction layer
    is logged once, counted and answered 500 statelessly."""
    ep = Endpoint(EndpointSettings(server="lyncgate/test"))

    def broken(*args: Any) -> list[Event]:
        raise AttributeError("layer bug")

    monkeypatch.setattr(ep.transactions, "receive_request", broken)
    with structlog.testing.capture_logs() as logs:
        out = sends(ep.receive(invite("x-1", "MESSAGE"), SRC, None, 0.0))
    assert [r.status for r in out] == [500]
    (error,) = [e for e in logs if e["log_level"] == "error"]
    assert (error["where"], error["call_id"]) == ("receive", "x-1")
    assert ep.counters["internal_errors"] == 1


def test_unknown_methods_are_counted_as_other() -> None:
    """A method name is chosen by the peer: counting each one made a counter in /status
    and a label value of lyncgate_sip_requests_received per fuzzed name (issue 22)."""
    ep = Endpoint(EndpointSettings(server="lyncgate/test"))
    for method in ("FOO", "BAR", "OPTIONS", "X" * 40):
        ep.receive(invite(f"m-{method[:3]}", method), SRC, None, 0.0)
    counted = {k: v for k, v in ep.counters.items() if k.startswith("requests_in:")}
    assert counted == {"requests_in:other": 3, "requests_in:OPTIONS": 1}
