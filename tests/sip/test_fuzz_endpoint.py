"""Mutation fuzzing at the endpoint (issue 22): the RFC 4475 corpus and captured Lync,
Polycom and SIPp messages, with bytes flipped, header lines deleted or repeated and the
message cut short, fed to an `Endpoint` over UDP and TCP. No exception may escape, none may
be caught at the boundary either (`internal_errors` stays 0: the boundary is the last line,
not the way malformed input is handled), and every answer the node sends parses.

Deterministic (derandomized, no example database) and bounded to a few seconds.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.sip.endpoint import Endpoint, EndpointSettings
from gateway.sip.errors import SipError
from gateway.sip.message import Request, Response, make_response
from gateway.sip.parse import parse_message
from gateway.sip.transaction_layer import AckReceived, CancelReceived, Event, RequestReceived
from gateway.sip.transaction_machines import Send
from gateway.transport.peer import Peer, Transport

FIXTURES = Path(__file__).parent / "fixtures"
UDP = Peer(Transport.UDP, "198.51.100.7", 40123)
TCP = Peer(Transport.TCP, "198.51.100.8", 40124)

# What SIPp's stock scenarios and a registering device send, as captured.
SIPP = [
    b"REGISTER sip:192.0.2.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.5:5061;branch=z9hG4bK-4242-1-0;rport\r\n"
    b"From: <sip:dev1@192.0.2.1>;tag=4242SIPpTag001\r\nTo: <sip:dev1@192.0.2.1>\r\n"
    b"Call-ID: 1-4242@10.0.0.5\r\nCSeq: 2 REGISTER\r\n"
    b"Contact: <sip:dev1@10.0.0.5:5061;transport=udp>;expires=3600;+sip.instance=\"<urn:x>\"\r\n"
    b'Authorization: Digest username="dev1", realm="gw", nonce="AAAA", uri="sip:192.0.2.1", '
    b'response="0123456789abcdef0123456789abcdef", algorithm=MD5\r\n'
    b"Max-Forwards: 70\r\nExpires: 3600\r\nUser-Agent: SIPp\r\nContent-Length: 0\r\n\r\n",
    b"BYE sip:service@192.0.2.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.5:5061;branch=z9hG4bK-4242-1-7\r\n"
    b"From: sipp <sip:sipp@10.0.0.5:5061>;tag=4242SIPpTag001\r\n"
    b"To: service <sip:service@192.0.2.1:5060>;tag=gw77\r\n"
    b"Call-ID: 1-4242@10.0.0.5\r\nCSeq: 2 BYE\r\nRoute: <sip:192.0.2.1;lr>\r\n"
    b"Max-Forwards: 70\r\nSubject: Performance Test\r\nContent-Length: 0\r\n\r\n",
    b"CANCEL sip:service@192.0.2.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 10.0.0.5:5061;branch=z9hG4bK-4242-1-0\r\n"
    b"From: sipp <sip:sipp@10.0.0.5:5061>;tag=4242SIPpTag001\r\n"
    b"To: service <sip:service@192.0.2.1:5060>\r\nCall-ID: 1-4242@10.0.0.5\r\n"
    b"CSeq: 1 CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-gw-1\r\n"
    b"From: <sip:gw@192.0.2.1>;tag=gw1\r\nTo: <sip:callee@10.0.0.9>;tag=9\r\n"
    b"Call-ID: out-1@192.0.2.1\r\nCSeq: 1 INVITE\r\nContact: <sip:callee@10.0.0.9>\r\n"
    b"Record-Route: <sip:10.0.0.8;lr>, <sip:10.0.0.7;lr>\r\n"
    b"Session-Expires: 1800;refresher=uac\r\nContent-Length: 0\r\n\r\n",
]

CORPUS = [
    *(p.read_bytes() for p in sorted((FIXTURES / "rfc4475").glob("*.dat"))),
    (FIXTURES / "lync_invite.txt").read_bytes(),
    (FIXTURES / "polycom_invite.txt").read_bytes(),
    *SIPP,
]


class Reader:
    """A minimal call handler (not the B2BUA, which is being rewritten): it reads every
    typed view a call handler reads and answers from them, so malformed headers meet the
    paths a handler takes."""

    methods = frozenset({"INVITE", "REGISTER", "BYE", "MESSAGE", "INFO", "UPDATE", "NOTIFY",
                         "SUBSCRIBE", "REFER", "PRACK"})

    def on_event(self, event: Event, now: float, core: Endpoint) -> list[Event]:
        if isinstance(event, RequestReceived):
            request = event.request
            self._read(request)
            status = 200 if request.contacts or request.method != "INVITE" else 400
            response = make_response(request, status, to_tag=core.new_tag(),
                                     headers=(("Contact", "<sip:gw@192.0.2.1>"),))
            return core.respond(request, event.transaction, response, now)
        if isinstance(event, AckReceived | CancelReceived):
            self._read(event.request)
        return []

    @staticmethod
    def _read(message: Request | Response) -> None:
        message.contacts  # noqa: B018
        message.routes  # noqa: B018
        message.record_routes  # noqa: B018
        message.content_type  # noqa: B018
        message.session_expires  # noqa: B018
        message.expires  # noqa: B018
        message.tokens("Supported")
        if isinstance(message, Request):
            message.uri  # noqa: B018

    def next_deadline(self) -> float | None:
        return None

    def handle_timeout(self, now: float, core: Endpoint) -> list[Event]:
        return []


def _lines(data: bytes) -> tuple[list[bytes], bytes]:
    head, sep, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n"), sep + body


_mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 4095), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(1, 60), st.just(0)),
    st.tuples(st.just("duplicate"), st.integers(1, 60), st.just(0)),
    st.tuples(st.just("truncate"), st.integers(0, 4095), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 4095), st.sampled_from(
        [0, 9, 10, 13, 32, 34, 44, 58, 59, 60, 62, 64, 92, 0xC3, 0xFF])),
)


def mutate(data: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    for kind, at, value in mutations:
        if not data:
            break
        if kind == "flip":
            i = at % len(data)
            data = data[:i] + bytes([value]) + data[i + 1:]
        elif kind == "truncate":
            data = data[: at % len(data)]
        elif kind == "insert":
            i = at % (len(data) + 1)
            data = data[:i] + bytes([value]) + data[i:]
        else:
            lines, rest = _lines(data)
            if len(lines) < 2:
                continue
            i = 1 + at % (len(lines) - 1)  # never the start line
            if kind == "delete":
                del lines[i]
            else:
                lines.insert(i, lines[i])
            data = b"\r\n".join(lines) + rest
    return data


def feed(data: bytes, handler: Reader | None) -> None:
    for peer in (UDP, TCP):
        endpoint = Endpoint(EndpointSettings(server="lyncgate/fuzz"), handler=handler)
        events = endpoint.receive(data, peer, None, 0.0)
        # A retransmission and the timers that follow (G, H, J, ...): the paths of a
        # transaction the message started.
        events += endpoint.receive(data, peer, None, 0.5)
        for now in (1.0, 4.0, 33.0, 65.0):
            events += endpoint.handle_timeout(now)
        events += endpoint.transport_failed(peer, 66.0)
        assert endpoint.counters.get("internal_errors", 0) == 0, data
        for event in events:
            if isinstance(event, Send):
                check_answer(event.data)


def check_answer(data: bytes) -> None:
    """What the node sends parses as a stream transport would frame it (Content-Length
    present and right), and the response says where it belongs."""
    sent = parse_message(data, datagram=False)
    assert isinstance(sent, Response)
    assert 100 <= sent.status <= 699
    assert sent.headers.get("Via") is not None and sent.headers.get("CSeq") is not None


@settings(max_examples=1500, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(CORPUS), mutations=st.lists(_mutation, min_size=1, max_size=4),
       with_handler=st.booleans())
def test_mutated_messages_never_escape_and_every_answer_parses(
    seed: bytes, mutations: list[tuple[str, int, int]], with_handler: bool
) -> None:
    feed(mutate(seed, mutations), Reader() if with_handler else None)


def test_the_corpus_itself_is_handled_without_internal_errors() -> None:
    for data in CORPUS:
        feed(data, None)
        feed(data, Reader())


def test_the_mutations_change_what_they_say() -> None:
    data = b"A b SIP/2.0\r\nX: 1\r\nY: 2\r\n\r\nbody"
    assert mutate(data, [("delete", 0, 0)]) == b"A b SIP/2.0\r\nY: 2\r\n\r\nbody"
    assert mutate(data, [("duplicate", 1, 0)]) == b"A b SIP/2.0\r\nX: 1\r\nY: 2\r\nY: 2\r\n\r\nbody"
    assert mutate(data, [("truncate", 3, 0)]) == b"A b"
    assert mutate(data, [("flip", 0, 66)]) == b"B b SIP/2.0\r\nX: 1\r\nY: 2\r\n\r\nbody"
    assert mutate(data, [("insert", 1, 32)]) == b"A  b SIP/2.0\r\nX: 1\r\nY: 2\r\n\r\nbody"


def test_a_sip_error_is_all_the_parser_raises_on_the_corpus() -> None:
    for data in CORPUS:
        try:
            message = parse_message(data)
        except SipError:
            continue
        assert isinstance(message, Request | Response)
