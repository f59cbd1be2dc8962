"""Transaction state machines and the layer: each timer fires at its RFC 3261 time, with a
fake clock; retransmissions are absorbed; CANCEL, stray ACK and merged requests are handled."""

from __future__ import annotations

import itertools
import math

from gateway.sip.message import Request, Response, make_response
from gateway.sip.parse import parse_message
from gateway.sip.timers import Timers
from gateway.sip.transaction_layer import (
    AckReceived,
    CancelReceived,
    Event,
    RequestReceived,
    ResponseReceived,
    StrayResponse,
    TransactionLayer,
    TransactionTimeout,
)
from gateway.sip.transaction_machines import LINGER_GRID_S, Send, State
from gateway.transport.peer import Peer

UDP = Peer("UDP", "192.0.2.10", 5060)
TCP = Peer("TCP", "192.0.2.10", 5060, connection=7)
T = Timers()


def lingering(deadline: float) -> float:
    """Where a Timer D, I, J, K, L or M set for `deadline` fires: on the grid those
    clean-up timers share."""
    return math.ceil(deadline / LINGER_GRID_S) * LINGER_GRID_S


def request(method: str = "INVITE", branch: str = "z9hG4bK-a", cseq: int = 1,
            from_tag: str = "ft", to_tag: str | None = None, uri: str = "sip:b@gw") -> Request:
    to = "<sip:b@gw>" + (f";tag={to_tag}" if to_tag else "")
    data = (
        f"{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch={branch}\r\n"
        f"From: <sip:a@example.com>;tag={from_tag}\r\nTo: {to}\r\nCall-ID: call-1\r\n"
        f"CSeq: {cseq} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


def response_to(req: Request, status: int, to_tag: str = "tt") -> Response:
    return parse_message(make_response(req, status, to_tag=to_tag).to_bytes())  # type: ignore[return-value]


def sends(events: list[Event]) -> list[Send]:
    return [e for e in events if isinstance(e, Send)]


def run_until(layer: TransactionLayer, end: float) -> list[tuple[float, Event]]:
    """Fire every timer up to `end`, recording when each event happened."""
    out: list[tuple[float, Event]] = []
    while (deadline := layer.next_deadline()) is not None and deadline <= end:
        out.extend((deadline, e) for e in layer.handle_timeout(deadline))
    return out


def test_invite_client_timer_a_doubles_and_timer_b_times_out_at_64_t1() -> None:
    layer = TransactionLayer(T)
    txn, first = layer.send_request(request(), UDP, now=0.0)
    assert len(sends(first)) == 1
    fired = run_until(layer, 100.0)
    retransmit_times = [t for t, e in fired if isinstance(e, Send)]
    assert retransmit_times == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    timeouts = [(t, e) for t, e in fired if isinstance(e, TransactionTimeout)]
    assert [(t, e.timer) for t, e in timeouts] == [(32.0, "B")]
    assert txn.state is State.TERMINATED and len(layer) == 0


def test_invite_client_reliable_does_not_retransmit() -> None:
    layer = TransactionLayer(T)
    layer.send_request(request(), TCP, now=0.0)
    fired = run_until(layer, 100.0)
    assert [e for _, e in fired if isinstance(e, Send)] == []
    assert [(t, e.timer) for t, e in fired if isinstance(e, TransactionTimeout)] == [(32.0, "B")]


def test_non_invite_client_timer_e_caps_at_t2_and_f_fires() -> None:
    layer = TransactionLayer(T)
    layer.send_request(request("OPTIONS"), UDP, now=0.0)
    fired = run_until(layer, 40.0)
    times = [t for t, e in fired if isinstance(e, Send)]
    assert times[:5] == [0.5, 1.5, 3.5, 7.5, 11.5]  # 0.5, 1, 2, 4, then T2 = 4 each
    assert all(b - a == 4.0 for a, b in itertools.pairwise(times[3:]))
    assert [(t, e.timer) for t, e in fired if isinstance(e, TransactionTimeout)] == [(32.0, "F")]


def test_non_invite_client_proceeding_retransmits_every_t2_and_completes_with_k() -> None:
    layer = TransactionLayer(T)
    req = request("BYE", to_tag="x")
    txn, _ = layer.send_request(req, UDP, now=0.0)
    events = layer.receive_response(response_to(req, 100), UDP, now=0.2)
    assert isinstance(events[0], ResponseReceived)
    fired = run_until(layer, 5.0)
    assert [t for t, e in fired if isinstance(e, Send)] == [0.5, 4.5]
    layer.receive_response(response_to(req, 200), UDP, now=5.0)
    assert txn.state is State.COMPLETED
    assert layer.next_deadline() == lingering(5.0 + T.t4)  # Timer K
    run_until(layer, 20.0)
    assert len(layer) == 0


def test_invite_client_failure_sends_ack_and_absorbs_retransmitted_final() -> None:
    layer = TransactionLayer(T)
    req = request()
    txn, _ = layer.send_request(req, UDP, now=0.0)
    busy = response_to(req, 486)
    events = layer.receive_response(busy, UDP, now=0.1)
    ack = sends(events)[0]
    assert ack.data.startswith(b"ACK sip:b@gw SIP/2.0")
    assert b"CSeq: 1 ACK" in ack.data and b";tag=tt" in ack.data
    assert any(isinstance(e, ResponseReceived) for e in events)
    again = layer.receive_response(busy, UDP, now=1.0)
    assert [type(e) for e in again] == [Send]  # ACK again, nothing new for the TU
    assert layer.next_deadline() == lingering(0.1 + 32.0)  # Timer D
    run_until(layer, 40.0)
    assert txn.state is State.TERMINATED


def test_invite_client_accepted_passes_further_2xx_up_until_timer_m() -> None:
    layer = TransactionLayer(T)
    req = request()
    txn, _ = layer.send_request(req, UDP, now=0.0)
    ok = response_to(req, 200)
    assert isinstance(layer.receive_response(ok, UDP, now=0.1)[0], ResponseReceived)
    assert txn.state is State.ACCEPTED
    assert isinstance(layer.receive_response(ok, UDP, now=0.6)[0], ResponseReceived)
    run_until(layer, lingering(0.1 + 64 * T.t1))
    assert isinstance(layer.receive_response(ok, UDP, now=40.0)[0], StrayResponse)


def test_invite_server_sends_100_absorbs_retransmission_and_retransmits_final_with_g() -> None:
    layer = TransactionLayer(T)
    req = request()
    events = layer.receive_request(req, UDP, now=0.0)
    received = [e for e in events if isinstance(e, RequestReceived)]
    assert len(received) == 1 and sends(events)[0].data.startswith(b"SIP/2.0 100 Trying")
    again = layer.receive_request(request(), UDP, now=0.3)
    assert [type(e) for e in again] == [Send]  # the 100 again; the TU hears nothing
    txn = received[0].transaction
    layer.respond(txn, make_response(req, 486, to_tag="gw"), now=1.0)
    fired = run_until(layer, 40.0)
    assert [t for t, e in fired if isinstance(e, Send)] == [1.5, 2.5, 4.5, 8.5, 12.5, 16.5,
                                                           20.5, 24.5, 28.5, 32.5]
    assert [(t, e.timer) for t, e in fired if isinstance(e, TransactionTimeout)] == [(33.0, "H")]


def test_invite_server_ack_confirms_and_timer_i_ends_it() -> None:
    layer = TransactionLayer(T)
    req = request()
    txn = next(e for e in layer.receive_request(req, UDP, 0.0) if isinstance(e, RequestReceived))
    layer.respond(txn.transaction, make_response(req, 404, to_tag="gw"), now=0.1)
    ack = request("ACK", to_tag="gw")
    assert layer.receive_request(ack, UDP, now=0.2) == []
    assert txn.transaction.state is State.CONFIRMED
    assert layer.next_deadline() == lingering(0.2 + T.t4)
    run_until(layer, 10.0)
    assert len(layer) == 0


def test_ack_for_2xx_goes_to_the_tu() -> None:
    layer = TransactionLayer(T)
    req = request()
    txn = next(e for e in layer.receive_request(req, UDP, 0.0) if isinstance(e, RequestReceived))
    layer.respond(txn.transaction, make_response(req, 200, to_tag="gw"), now=0.1)
    ack = request("ACK", branch="z9hG4bK-new-branch", to_tag="gw")
    events = layer.receive_request(ack, UDP, now=0.2)
    assert [type(e) for e in events] == [AckReceived]


def test_non_invite_server_timer_j_absorbs_retransmissions() -> None:
    layer = TransactionLayer(T)
    req = request("BYE", to_tag="x")
    txn = next(e for e in layer.receive_request(req, UDP, 0.0) if isinstance(e, RequestReceived))
    layer.respond(txn.transaction, make_response(req, 200), now=0.1)
    again = layer.receive_request(request("BYE", to_tag="x"), UDP, now=2.0)
    assert sends(again)[0].data.startswith(b"SIP/2.0 200")
    assert layer.next_deadline() == lingering(0.1 + 64 * T.t1)
    run_until(layer, 40.0)
    assert len(layer) == 0


def test_cancel_matches_pending_invite_and_is_answered_200() -> None:
    layer = TransactionLayer(T)
    layer.receive_request(request(), UDP, 0.0)
    events = layer.receive_request(request("CANCEL"), UDP, 0.5)
    assert sends(events)[0].data.startswith(b"SIP/2.0 200")
    cancelled = [e for e in events if isinstance(e, CancelReceived)]
    assert len(cancelled) == 1 and cancelled[0].invite.request.method == "INVITE"


def test_cancel_without_invite_gets_481() -> None:
    layer = TransactionLayer(T)
    events = layer.receive_request(request("CANCEL", branch="z9hG4bK-none"), UDP, 0.0)
    assert sends(events)[0].data.startswith(b"SIP/2.0 481")
    assert not [e for e in events if isinstance(e, CancelReceived)]


def test_merged_request_gets_482() -> None:
    layer = TransactionLayer(T)
    layer.receive_request(request(branch="z9hG4bK-path1"), UDP, 0.0)
    events = layer.receive_request(request(branch="z9hG4bK-path2"), UDP, 0.1)
    assert sends(events)[0].data.startswith(b"SIP/2.0 482")
    assert not [e for e in events if isinstance(e, RequestReceived)]


def test_rfc2543_branchless_requests_match_retransmissions() -> None:
    layer = TransactionLayer(T)
    old = request(branch="1234")
    first = layer.receive_request(old, UDP, 0.0)
    assert [e for e in first if isinstance(e, RequestReceived)]
    again = layer.receive_request(request(branch="1234"), UDP, 0.5)
    assert not [e for e in again if isinstance(e, RequestReceived)]


def test_completed_transactions_are_forgotten() -> None:
    layer = TransactionLayer(T)
    for n in range(500):
        req = request("BYE", branch=f"z9hG4bK-{n}", to_tag="x", cseq=n + 1)
        events = layer.receive_request(req, TCP, float(n))
        got = [e for e in events if isinstance(e, RequestReceived)]
        layer.respond(got[0].transaction, make_response(req, 200), float(n))
    run_until(layer, 1000.0)
    assert len(layer) == 0
    assert layer.next_deadline() is None


def _layer_with_identity() -> TransactionLayer:
    tags = (f"lt{n}" for n in itertools.count())
    return TransactionLayer(T, server="lyncgate/test", new_tag=lambda: next(tags))


def _answer(event: Event) -> Response:
    assert isinstance(event, Send)
    response = parse_message(event.data)
    assert isinstance(response, Response)
    return response


def test_responses_the_layer_builds_carry_server_and_a_to_tag_of_their_own() -> None:
    """RFC 3261 8.2.6.2: the 482 for a merged request and the 481 to a CANCEL matching
    nothing are final responses outside a dialog, so each gets a To tag (a new one); like
    the 100 Trying (which creates no dialog and has no tag), they carry the Server header."""
    layer = _layer_with_identity()
    trying = _answer(layer.receive_request(request(branch="z9hG4bK-path1"), UDP, 0.0)[0])
    merged = _answer(layer.receive_request(request(branch="z9hG4bK-path2"), UDP, 0.1)[0])
    unknown = _answer(layer.receive_request(request("CANCEL", branch="z9hG4bK-none"), UDP, 0.2)[0])
    assert (trying.status, merged.status, unknown.status) == (100, 482, 481)
    assert trying.to.tag is None and merged.to.tag and unknown.to.tag
    assert merged.to.tag != unknown.to.tag
    assert {r.headers.get("Server") for r in (trying, merged, unknown)} == {"lyncgate/test"}


def test_the_200_to_cancel_carries_the_to_tag_the_invite_was_answered_with() -> None:
    """RFC 3261 9.2: the 200 to a CANCEL has the To tag of the INVITE's responses: the tag
    of a provisional already sent, or, when only 100 went out, a tag chosen by the layer
    that the TU's 487 is then given too."""
    layer = _layer_with_identity()
    invite = request()
    txn = next(e for e in layer.receive_request(invite, UDP, 0.0)
                if isinstance(e, RequestReceived)).transaction
    layer.respond(txn, make_response(invite, 180, to_tag="ringing-tag"), 0.1)
    ok = _answer(layer.receive_request(request("CANCEL"), UDP, 0.2)[0])
    assert (ok.status, ok.to.tag, ok.headers.get("Server")) == (200, "ringing-tag", "lyncgate/test")

    layer = _layer_with_identity()
    txn = next(e for e in layer.receive_request(invite, UDP, 0.0)
                if isinstance(e, RequestReceived)).transaction
    ok = _answer(layer.receive_request(request("CANCEL"), UDP, 0.1)[0])
    terminated = _answer(layer.respond(txn, make_response(invite, 487, to_tag="tu-tag"), 0.2)[0])
    assert ok.status == 200 and ok.to.tag is not None
    assert terminated.status == 487 and terminated.to.tag == ok.to.tag


def test_a_transport_failure_ends_the_client_transactions_to_that_peer_at_once() -> None:
    """RFC 3261 17.1.4: a refused connection is reported to the TU now (timer "transport"),
    not at Timer B; transactions to other peers and answered ones are left alone."""
    layer = TransactionLayer(T)
    waiting, _ = layer.send_request(request(branch="z9hG4bK-w"), TCP, 0.0)
    other_peer = Peer("TCP", "192.0.2.11", 5060)
    elsewhere, _ = layer.send_request(request(branch="z9hG4bK-e"), other_peer, 0.0)
    answered, _ = layer.send_request(request("BYE", branch="z9hG4bK-x", to_tag="t"), TCP, 0.0)
    layer.receive_response(response_to(answered.request, 200), TCP, 0.1)
    events = layer.transport_failed(Peer("TCP", "192.0.2.10", 5060), 0.2)
    assert [(type(e), e.transaction, e.timer) for e in events
            if isinstance(e, TransactionTimeout)] == [(TransactionTimeout, waiting, "transport")]
    assert waiting.terminated and not elsewhere.terminated
    assert layer.transport_failed(TCP, 0.3) == []  # told once


def test_clean_up_timers_share_a_grid_and_retransmissions_keep_theirs() -> None:
    """Two BYE transactions answered 0.03 s apart are forgotten on the same deadline (one
    wake-up of the node for both); Timer E still retransmits at exactly T1."""
    layer = TransactionLayer(T)
    first = request("BYE", branch="z9hG4bK-b1", to_tag="tt")
    second = request("BYE", branch="z9hG4bK-b2", cseq=2, to_tag="tt")
    layer.send_request(first, UDP, now=0.0)
    layer.send_request(second, UDP, now=0.1)
    assert layer.next_deadline() == T.t1  # Timer E, off the grid
    layer.receive_response(response_to(first, 200), UDP, now=0.21)
    layer.receive_response(response_to(second, 200), UDP, now=0.24)
    assert layer.next_deadline() == lingering(5.21) == lingering(5.24)  # both Timer Ks
    layer.handle_timeout(5.24)
    assert len(layer) == 2
    layer.handle_timeout(lingering(5.24))
    assert len(layer) == 0 and layer.next_deadline() is None
