"""The node's own answers: OPTIONS, 405/501, 420, 416, 483, error responses, rport."""

from __future__ import annotations

from gateway.sip.endpoint import Endpoint, EndpointSettings
from gateway.sip.message import Response
from gateway.sip.parse import parse_message
from gateway.sip.transaction_machines import Send
from gateway.transport.peer import Peer

SRC = Peer("UDP", "198.51.100.7", 40123)


def probe(method: str = "OPTIONS", extra: str = "", via_host: str = "10.1.1.1",
          rport: bool = True, uri: str = "sip:gw@192.0.2.1", cseq_method: str | None = None,
          max_forwards: int = 70) -> bytes:
    via = f"SIP/2.0/UDP {via_host}:5062;branch=z9hG4bK-77" + (";rport" if rport else "")
    return (
        f"{method} {uri} SIP/2.0\r\nVia: {via}\r\nFrom: <sip:a@example.com>;tag=f1\r\n"
        f"To: <sip:gw@192.0.2.1>\r\nCall-ID: c-1\r\nCSeq: 5 {cseq_method or method}\r\n"
        f"Max-Forwards: {max_forwards}\r\n{extra}Content-Length: 0\r\n\r\n"
    ).encode()


def answer(data: bytes, endpoint: Endpoint | None = None, peer: Peer = SRC) -> tuple[Send, int]:
    ep = endpoint or Endpoint(EndpointSettings(server="lyncgate/test"))
    out = [e for e in ep.receive(data, peer, None, 0.0) if isinstance(e, Send)]
    assert len(out) == 1
    status = parse_message(out[0].data).status  # type: ignore[union-attr]
    return out[0], status


def test_options_answered_with_capabilities_and_server_header() -> None:
    sent, status = answer(probe())
    assert status == 200
    msg = parse_message(sent.data)
    assert "OPTIONS" in (msg.headers.get("Allow") or "")
    assert msg.headers.get("Server") == "lyncgate/test"
    assert msg.headers.get("Accept") and msg.headers.get("Supported")
    assert msg.to.tag


def test_options_retransmission_gets_the_same_to_tag() -> None:
    ep = Endpoint(EndpointSettings(server="x"))
    first, _ = answer(probe(), ep)
    second, _ = answer(probe(), ep)
    assert parse_message(first.data).to.tag == parse_message(second.data).to.tag


def test_rport_and_received_are_stamped_and_used() -> None:
    sent, _ = answer(probe())
    via = parse_message(sent.data).top_via
    assert via.received == "198.51.100.7" and via.rport == 40123
    assert (sent.peer.host, sent.peer.port) == ("198.51.100.7", 40123)


def test_without_rport_the_response_goes_to_the_via_port_at_the_source_address() -> None:
    sent, _ = answer(probe(rport=False))
    assert (sent.peer.host, sent.peer.port) == ("198.51.100.7", 5062)


def test_unknown_method_501_known_but_not_taken_405() -> None:
    _, status = answer(probe("FROB"))
    assert status == 501
    sent, status = answer(probe("SUBSCRIBE"))
    assert status == 405 and parse_message(sent.data).headers.get("Allow")


def test_unknown_require_gets_420_with_unsupported() -> None:
    sent, status = answer(probe(extra="Require: foo, timer\r\n"))
    assert status == 420
    assert parse_message(sent.data).headers.get("Unsupported") == "foo"


def test_unsupported_uri_scheme_gets_416() -> None:
    _, status = answer(probe(uri="h323:room@example.com"))
    assert status == 416


def test_cseq_method_mismatch_gets_400_naming_it() -> None:
    sent, status = answer(probe(cseq_method="INVITE"))
    assert status == 400 and b"CSeq" in sent.data.split(b"\r\n")[0]


def test_bad_version_gets_505_and_garbage_is_dropped() -> None:
    _, status = answer(probe().replace(b"SIP/2.0\r\nVia", b"SIP/3.0\r\nVia"))
    assert status == 505
    ep = Endpoint(EndpointSettings(server="x"))
    assert ep.receive(b"\x16\x03\x01garbage", SRC, None, 0.0) == []
    assert ep.counters["parse_errors:400"] == 1


def test_invite_with_max_forwards_zero_gets_483() -> None:
    _, status = answer(probe("INVITE", max_forwards=0))
    assert status == 483


def test_draining_node_refuses_new_dialogs_with_503_retry_after() -> None:
    ep = Endpoint(EndpointSettings(server="x", retry_after=17))
    ep.draining = True
    sends = [e for e in ep.receive(probe("INVITE"), SRC, None, 0.0) if isinstance(e, Send)]
    final = parse_message(sends[-1].data)
    assert final.status == 503  # type: ignore[union-attr]
    assert final.headers.get("Retry-After") == "17"


def test_a_lync_hop_asking_for_keep_alives_is_answered_in_kind() -> None:
    """[MS-CONMGMT]: `ms-keep-alive: UAC;hop-hop=yes` gets the UAS answer, on the stateless
    OPTIONS path and on responses sent through a transaction (here a 405 for MESSAGE)."""
    lync = "ms-keep-alive: UAC;hop-hop=yes\r\n"
    for data in (probe(extra=lync), probe("MESSAGE", extra=lync)):
        sent, _ = answer(data)
        value = parse_message(sent.data).headers.get("ms-keep-alive") or ""
        assert value.startswith("UAS;") and "hop-hop=yes" in value and "timeout=300" in value
    sent, _ = answer(probe())
    assert parse_message(sent.data).headers.get("ms-keep-alive") is None


TCP = Peer("TCP", "198.51.100.7", 40123, connection=4)


def test_received_and_rport_are_stamped_on_every_transport() -> None:
    """RFC 3261 18.2.1 and RFC 3581 are not UDP-only: over TCP a sent-by that is a name
    gets `received`, and `rport` is filled in with the source port when asked for."""
    named = probe(rport=False).replace(b"SIP/2.0/UDP 10.1.1.1", b"SIP/2.0/TCP pc.example.com")
    via = parse_message(answer(named, peer=TCP)[0].data).top_via
    assert via.received == "198.51.100.7" and not via.wants_rport
    asked = probe().replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP")
    via = parse_message(answer(asked, peer=TCP)[0].data).top_via
    assert via.received == "198.51.100.7" and via.rport == 40123


def test_sent_by_the_source_address_is_left_alone_however_it_is_spelt() -> None:
    """`received` only when the sent-by differs from the source: an IPv6 address written
    in another form is the same address."""
    peer = Peer("UDP", "2001:db8::7", 5062)
    data = probe(rport=False, via_host="[2001:DB8:0:0::7]")
    via = parse_message(answer(data, peer=peer)[0].data).top_via
    assert via.received is None and via.host == "[2001:db8:0:0::7]"


def test_error_responses_rebuilt_from_bytes_carry_received_and_the_rport_value() -> None:
    """A 400 built from the raw bytes (the request did not parse as a whole) has the same
    Via stamping as any other response, and goes to the source port rport asked for."""
    sent, status = answer(probe(max_forwards=0).replace(b"Max-Forwards: 0", b"Max-Forwards: x"))
    via = parse_message(sent.data).top_via
    assert status == 400
    assert via.received == "198.51.100.7" and via.rport == 40123
    assert (sent.peer.host, sent.peer.port) == ("198.51.100.7", 40123)
    sent, status = answer(probe().replace(b"SIP/2.0\r\nVia", b"SIP/3.0\r\nVia"))
    assert status == 505 and parse_message(sent.data).top_via.rport == 40123


def test_every_response_the_node_sends_carries_server() -> None:
    """Responses built by the endpoint, by the transaction layer (100 Trying) and from raw
    bytes (400) all name the node."""
    ep = Endpoint(EndpointSettings(server="lyncgate/test"))
    invite = [e for e in ep.receive(probe("INVITE"), SRC, None, 0.0) if isinstance(e, Send)]
    refused, _ = answer(probe(extra="Require: foo\r\n"), ep)
    garbled, _ = answer(probe(cseq_method="x").replace(b"CSeq: 5 x", b"CSeq: five"), ep)
    for sent in (*invite, refused, garbled):
        assert parse_message(sent.data).headers.get("Server") == "lyncgate/test"


def test_unknown_require_names_the_tags_in_the_reason_phrase() -> None:
    """The 420 says which option tags are not supported, in the reason and in Unsupported."""
    sent, _ = answer(probe(extra="Require: foo, timer, bar\r\n"))
    response = parse_message(sent.data)
    assert isinstance(response, Response)
    assert response.reason == "Bad Extension (unsupported: foo, bar)"
    assert response.headers.get("Unsupported") == "foo, bar"


def test_malformed_to_or_call_id_is_answered_400_naming_it() -> None:
    """To and Call-ID are copied as written, as From and CSeq are, so a malformed one gets
    the 400 naming it instead of silence; the To copied is given a tag."""
    bad_to = probe().replace(b"To: <sip:gw@192.0.2.1>", b"To: <sip:gw@192.0.2.1")
    sent, _ = answer(bad_to)
    response = parse_message(sent.data)
    assert isinstance(response, Response)
    assert response.status == 400 and response.reason.startswith("Bad header: To (")
    to = response.headers.get("To") or ""
    assert to.startswith("<sip:gw@192.0.2.1;tag=") and len(to) > len("<sip:gw@192.0.2.1;tag=")
    sent, _ = answer(probe().replace(b"Call-ID: c-1", b"Call-ID: c 1"))
    response = parse_message(sent.data)
    assert isinstance(response, Response)
    assert response.status == 400 and response.reason.startswith("Bad header: Call-ID")
    assert response.headers.get("Call-ID") == "c 1"


def test_missing_call_id_from_or_to_gets_400_naming_it() -> None:
    """RFC 4475 3.1.4.1: a request without Call-ID, From or To is answered 400 with the
    headers it has (issue 22: it used to get nothing)."""
    for name, line in (("To", b"To: <sip:gw@192.0.2.1>\r\n"), ("Call-ID", b"Call-ID: c-1\r\n"),
                       ("From", b"From: <sip:a@example.com>;tag=f1\r\n")):
        sent, status = answer(probe().replace(line, b""))
        response = parse_message(sent.data)
        assert isinstance(response, Response)
        assert status == 400 and response.reason == f"Missing header: {name}"
        assert name not in response.headers
        assert sent.peer == SRC  # rport: back to the source port


def test_unreadable_via_is_answered_at_the_source_address() -> None:
    """With a Via that does not parse there is no other address than the source: the
    400 (or 505) goes there, with the Via copied as written."""
    bad_via = probe(rport=False).replace(b"Via: SIP/2.0/UDP 10.1.1.1:5062", b"Via: garbage here")
    sent, status = answer(bad_via)
    assert status == 400 and sent.peer == SRC
    assert b"\r\nVia: garbage here;branch=z9hG4bK-77\r\n" in sent.data
    version = probe().replace(b"SIP/2.0\r\n", b"SIP/7.0\r\n").replace(
        b"Via: SIP/2.0/UDP", b"Via: SIP/7.0/UDP")
    sent, status = answer(version)
    assert status == 505 and sent.peer == SRC


def test_what_cannot_be_answered_is_still_dropped() -> None:
    """Without any Via a response would not be one; responses and ACKs are never
    answered: dropped."""
    ep = Endpoint(EndpointSettings(server="x"))
    for data in (
        probe().replace(b"Via: SIP/2.0/UDP 10.1.1.1:5062;branch=z9hG4bK-77;rport\r\n", b""),
        probe("ACK").replace(b"To: <sip:gw@192.0.2.1>\r\n", b""),
        b"SIP/2.0 200 OK\r\nCSeq: x\r\nContent-Length: 0\r\n\r\n",
    ):
        assert ep.receive(data, SRC, None, 0.0) == []


def test_stateless_options_tags_differ_between_requests() -> None:
    """The derived To tag is per request, not a constant: another Call-ID, another tag."""
    first, _ = answer(probe())
    other, _ = answer(probe().replace(b"Call-ID: c-1", b"Call-ID: c-2"))
    assert parse_message(first.data).to.tag != parse_message(other.data).to.tag
