"""Overload control on a fake clock: the share of new dialogs admitted falls with the
measured pressure and comes back when headroom returns; the endpoint sheds only new
dialog-creating requests, statelessly with 503 + Retry-After, never what belongs to work
already taken; RFC 7339 feedback goes to clients that asked for it."""

from __future__ import annotations

from gateway.sip.endpoint import Endpoint, EndpointSettings
from gateway.sip.message import Message, Request, Response
from gateway.sip.overload import Observation, OverloadControl
from gateway.sip.parse import parse_message
from gateway.sip.transaction_layer import RequestReceived
from gateway.sip.transaction_machines import Send
from gateway.transport.peer import Peer

SRC = Peer("UDP", "198.51.100.7", 40123)
CALM = Observation(lag=0.001, queue=0.0, cpu=0.2)
LAGGING = Observation(lag=0.08, queue=0.0, cpu=0.5)  # 4x the 20 ms target


class Taker:
    """A handler that takes every request and answers nothing: calls in progress."""

    methods = frozenset({"INVITE", "BYE", "REGISTER"})

    def __init__(self) -> None:
        self.got: list[Request] = []

    def on_event(self, event: object, now: float, core: Endpoint) -> list[object]:
        if isinstance(event, RequestReceived):
            self.got.append(event.request)
        return []

    def next_deadline(self) -> float | None:
        return None

    def handle_timeout(self, now: float, core: Endpoint) -> list[object]:
        return []


def request(method: str, n: int, *, to_tag: str = "", oc: bool = False) -> bytes:
    tag = f";tag={to_tag}" if to_tag else ""
    via = f"SIP/2.0/UDP 198.51.100.7:40123;branch=z9hG4bK-{method}{n};rport" + (
        ";oc" if oc else "")
    return (f"{method} sip:room@192.0.2.1 SIP/2.0\r\nVia: {via}\r\n"
            f"From: <sip:a@example.com>;tag=f{n}\r\nTo: <sip:room@192.0.2.1>{tag}\r\n"
            f"Call-ID: call-{n}\r\nCSeq: 1 {method}\r\nContact: <sip:a@198.51.100.7:40123>\r\n"
            "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()


def sent(events: list[object]) -> list[Message]:
    return [parse_message(e.data) for e in events if isinstance(e, Send)]


def overloaded() -> tuple[Endpoint, Taker]:
    taker = Taker()
    ep = Endpoint(EndpointSettings(server="lyncgate/test", retry_after=7),
                  handler=taker)  # type: ignore[arg-type]
    ep.overload.observe(0.0, LAGGING)
    ep.overload.observe(0.1, LAGGING)  # lasting: a quarter of new dialogs admitted
    return ep, taker


def test_one_late_interval_is_a_pause_and_two_are_overload() -> None:
    """A collection or start-up work can make one timer late: that alone sheds nothing."""
    control = OverloadControl()
    control.observe(0.0, Observation(lag=0.5, queue=0.0, cpu=1.0))
    assert control.share == 1.0
    control.observe(0.1, CALM)
    control.observe(0.2, Observation(lag=0.5, queue=0.0, cpu=1.0))
    assert control.share == 1.0
    control.observe(0.3, Observation(lag=0.04, queue=0.0, cpu=0.5))  # the second in a row
    assert control.share == 0.5 and control.reason == "event loop lag"


def test_a_filling_receive_buffer_cuts_at_once() -> None:
    control = OverloadControl()
    control.observe(0.0, Observation(lag=0.0, queue=0.2, cpu=0.5))  # twice the target
    assert control.share == 0.5 and control.reason == "receive queue"


def test_the_share_falls_with_the_pressure_and_is_back_within_a_second() -> None:
    control = OverloadControl()
    control.observe(0.0, Observation(lag=0.04, queue=0.0, cpu=0.5))  # twice the target
    control.observe(0.05, Observation(lag=0.04, queue=0.0, cpu=0.5))
    assert control.share == 0.5 and control.reason == "event loop lag"
    control.observe(0.1, Observation(lag=0.0, queue=0.3, cpu=0.5))  # 3x the queue target
    assert abs(control.share - 0.5 / 3) < 1e-9 and control.reason == "receive queue"
    for tick in range(2, 40):
        control.observe(tick * 0.1, Observation(lag=0.0, queue=0.0, cpu=1.0))  # cpu-bound
    assert control.share == control.policy.floor and control.reason == "cpu"
    ticks = 0
    while control.shedding:
        ticks += 1
        control.observe(4.0 + ticks * 0.1, CALM)
    assert ticks * control.policy.interval <= 1.0


def test_near_the_target_the_share_is_probed_up_gently() -> None:
    control = OverloadControl(share=0.5)
    control.observe(0.0, Observation(lag=0.015, queue=0.0, cpu=0.5))  # 75% of the target
    assert abs(control.share - 0.52) < 1e-9


def test_admission_within_the_share_is_smooth() -> None:
    control = OverloadControl(share=0.25, reason="cpu")
    taken = [control.admit() for _ in range(100)]
    assert taken.count(True) == 25
    assert all(taken[i] for i in range(3, 100, 4))  # every fourth, not in bursts
    assert control.shed == {"cpu": 75}


def test_new_dialogs_are_shed_statelessly_and_work_in_progress_is_not() -> None:
    ep, taker = overloaded()
    assert ep.overload.shedding
    answers = [sent(ep.receive(request("INVITE", n), SRC, None, 1.0)) for n in range(40)]
    shed = [a[0] for a in answers if len(a) == 1 and isinstance(a[0], Response)
            and a[0].status == 503]
    taken = [a for a in answers if a and isinstance(a[0], Response) and a[0].status == 100]
    assert shed and taken and len(shed) + len(taken) == 40
    assert shed[0].headers.get("Retry-After") == "7"
    assert "overloaded: event loop lag" in shed[0].reason
    assert len(ep.transactions) == len(taken)  # nothing kept for what was shed
    # A retransmission of an INVITE that was taken is answered by its transaction.
    first_taken = next(n for n, a in enumerate(answers) if a and a[0].status == 100)
    again = sent(ep.receive(request("INVITE", first_taken), SRC, None, 1.1))
    assert [m.status for m in again if isinstance(m, Response)] == [100]
    # Requests inside dialogs, and probes, are never shed.
    before = len(taker.got)
    for n in range(40):
        ep.receive(request("BYE", 100 + n, to_tag="ours"), SRC, None, 1.2)
    assert len(taker.got) == before + 40
    options = sent(ep.receive(request("OPTIONS", 999), SRC, None, 1.2))
    assert [m.status for m in options if isinstance(m, Response)] == [200]
    assert ep.overload.shed["event loop lag"] == len(shed)


def test_registrations_are_new_dialogs_to_shed_too() -> None:
    ep, _ = overloaded()
    statuses = [m.status for n in range(20) for m in sent(ep.receive(
        request("REGISTER", n), SRC, None, 1.0)) if isinstance(m, Response)]
    assert 503 in statuses


def test_rfc7339_feedback_goes_to_clients_that_ask_for_it() -> None:
    ep, _ = overloaded()
    drop = round(100 * (1 - ep.overload.share))
    answers = [m for n in range(10) for m in sent(ep.receive(request("INVITE", n, oc=True),
                                                                 SRC, None, 1.0))]
    vias = {dict(m.top_via.params).get("oc") for m in answers if isinstance(m, Response)}
    assert vias == {str(drop)}
    plain = [m for n in range(10, 20) for m in sent(ep.receive(request("INVITE", n), SRC,
                                                                 None, 1.0))]
    assert all(dict(m.top_via.params).get("oc") is None for m in plain)
    while ep.overload.shedding:  # headroom again: the next answers say stop
        ep.overload.observe(1.0, CALM)
    done = sent(ep.receive(request("SUBSCRIBE", 50, oc=True), SRC, None, 1.5))  # 405
    params = dict(done[0].top_via.params)
    assert (params.get("oc"), params.get("oc-validity")) == ("0", "0")
    later = sent(ep.receive(request("SUBSCRIBE", 51, oc=True), SRC, None, 3.0))
    after = dict(later[0].top_via.params)  # told once: the client's own bare oc, no values
    assert after["oc"] is None and "oc-validity" not in after


def refusals(ep: Endpoint, method: str, numbers: range, *, oc: bool = False
             ) -> dict[int, Response]:
    out: dict[int, Response] = {}
    for n in numbers:
        answer = sent(ep.receive(request(method, n, oc=oc), SRC, None, 1.0))
        if answer and isinstance(answer[0], Response) and answer[0].status == 503:
            out[n] = answer[0]
    return out


def test_the_ack_of_a_refusal_is_absorbed_without_reaching_anyone() -> None:
    """A refusal's To tag marks it, so its ACK (hop-by-hop, RFC 3261 17.1.1.3) is dropped
    from the raw bytes while the node sheds: no transaction looks for it, no handler sees it."""
    ep, taker = overloaded()
    shed = refusals(ep, "INVITE", range(20))
    assert shed and all(r.to.tag and r.to.tag.startswith("o") for r in shed.values())
    before = len(taker.got)
    for n, refusal in shed.items():
        # the ACK of a non-2xx answer has its INVITE's branch
        ack = request("ACK", n, to_tag=refusal.to.tag or "").replace(b"-ACK", b"-INVITE")
        assert ep.receive(ack, SRC, None, 1.1) == []
    assert ep.counters["acks_absorbed"] == len(shed) and len(taker.got) == before


def test_a_retransmitted_refusal_is_the_same_refusal() -> None:
    """Stateless, yet a retransmission of a shed INVITE gets the same To tag, whichever of
    the raw and the parsed path answered it (a folded header sends it the parsed way)."""
    ep, _ = overloaded()
    ep.overload.share = ep.overload.policy.floor
    first = refusals(ep, "INVITE", range(10))
    again = refusals(ep, "INVITE", range(10))
    common = first.keys() & again.keys()
    assert common and all(first[n].to.tag == again[n].to.tag for n in common)
    folded = request("INVITE", 500).replace(b"Max-Forwards: 70", b"Max-Forwards:\r\n 70")
    answers = [sent(ep.receive(folded, SRC, None, 1.0)) for _ in range(3)]
    tags = {a[0].to.tag for a in answers if a and isinstance(a[0], Response)
            and a[0].status == 503}
    assert len(tags) == 1 and next(iter(tags)).startswith("o")  # type: ignore[union-attr]


def test_refusals_from_raw_bytes_carry_what_a_parsed_one_does() -> None:
    """Via stamped with received/rport and the RFC 7339 feedback, every Via, From, To with
    the tag, Call-ID, CSeq, Retry-After, Server: the refusal a client gets is the same."""
    ep, _ = overloaded()
    shed = refusals(ep, "INVITE", range(20), oc=True)
    refusal = next(iter(shed.values()))
    params = dict(refusal.top_via.params)
    assert params["received"] == SRC.host and params["rport"] == str(SRC.port)
    assert params["oc"] == str(round(100 * (1 - ep.overload.share)))
    assert refusal.headers.get("Retry-After") == "7"
    assert refusal.headers.get("Server") == "lyncgate/test"
    assert refusal.cseq.method == "INVITE" and refusal.call_id.startswith("call-")
