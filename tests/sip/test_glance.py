"""The glance reads what overload shedding needs from raw bytes as the parser would, or
declines: over the RFC 4475 torture corpus, captured-style INVITEs and random bytes, a
glance that answers agrees with the parser on the method, the To tag and the server
transaction key, and it never raises."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.sip.errors import SipParseError
from gateway.sip.glance import Glance, glance, header_value
from gateway.sip.message import Request
from gateway.sip.parse import parse_message
from gateway.sip.transaction_layer import server_key

FIXTURES = Path(__file__).parent / "fixtures"
CORPUS = [*sorted((FIXTURES / "rfc4475").glob("*.dat")),
          FIXTURES / "lync_invite.txt", FIXTURES / "polycom_invite.txt"]

INVITE = (b"INVITE sip:room@192.0.2.1 SIP/2.0\r\n"
          b"Via: SIP/2.0/UDP 198.51.100.7:40123;branch=z9hG4bK-1;rport\r\n"
          b"Via: SIP/2.0/TCP proxy.example.com;branch=z9hG4bK-p\r\n"
          b"f: <sip:a@example.com>;tag=f1\r\nTo: <sip:room@192.0.2.1;tag=uri-param>\r\n"
          b"i: call-1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")


def agrees(seen: Glance, data: bytes) -> None:
    try:
        message = parse_message(data)
        assert isinstance(message, Request)
        to_tag, call_id, key = message.to.tag, message.call_id, server_key(message)
    except SipParseError:
        return  # refused by the parser: the glance may still read the few lines it needs
    assert seen.method == message.method
    assert seen.to_tag == (None if to_tag is None else to_tag.encode())
    assert header_value(seen.call_id) == call_id
    if seen.key is not None:
        assert seen.key == key
    assert [line.partition(b":")[2].strip() for line in seen.vias] == [
        v.encode() for v in message.headers.get_all("Via")]


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_the_corpus_is_read_as_the_parser_reads_it_or_declined(path: Path) -> None:
    data = path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    seen = glance(data)
    if seen is not None:
        agrees(seen, data)


def test_compact_names_several_vias_and_a_tag_inside_the_uri() -> None:
    """The ';tag=' inside To's brackets is the URI's: the request opens a dialog."""
    seen = glance(INVITE)
    assert seen is not None and seen.to_tag is None and len(seen.vias) == 2
    assert seen.key == ("z9hG4bK-1", "198.51.100.7", 40123, "INVITE")
    agrees(seen, INVITE)


@pytest.mark.parametrize("change", [
    (b"CSeq: 1 INVITE", b"CSeq: 1 BYE"),  # names another method
    (b"i: call-1\r\n", b""),  # a header missing
    (b"i: call-1\r\n", b"i: call-1\r\nCall-ID: call-2\r\n"),  # repeated
    (b"i: call-1\r\n", b"i: call-1\r\n other-line\r\n"),  # folded
    (b"rport\r\n", b"rport, SIP/2.0/UDP other;branch=z9hG4bK-2\r\n"),  # two values on a line
    (b"SIP/2.0\r\nVia", b"SIP/3.0\r\nVia"),
    (b"\r\n\r\n", b"\r\n"),  # no end of headers
])
def test_what_it_cannot_be_sure_of_is_left_to_the_parser(change: tuple[bytes, bytes]) -> None:
    assert glance(INVITE.replace(*change, 1)) is None


def test_an_rfc2543_branch_has_no_key_the_glance_can_build() -> None:
    seen = glance(INVITE.replace(b"branch=z9hG4bK-1", b"branch=old-1"))
    assert seen is not None and seen.key is None


@given(st.binary(max_size=600))
def test_random_bytes_never_raise(data: bytes) -> None:
    seen = glance(data)
    if seen is not None:
        agrees(seen, data)


@given(st.lists(st.sampled_from([
    b"Via: SIP/2.0/UDP h;branch=z9hG4bK-x", b"v: SIP/2.0/TLS [::1]:5061;branch=z9hG4bK-y",
    b"To: <sip:b@h>;tag=t", b"t: b <sip:b@h>", b"From: <sip:a@h>;tag=f", b"Call-ID: c",
    b"CSeq: 2 INVITE", b"CSeq: x INVITE", b"Max-Forwards: 70", b"To: sip:b@h;tag=t2",
    b"Via: SIP/2.0/UDP h:99999;branch=z9hG4bK-z", b"X: y", b"Content-Length: 0"]),
    max_size=10))
def test_header_mixes_agree_with_the_parser(lines: list[bytes]) -> None:
    data = b"INVITE sip:b@h SIP/2.0\r\n" + b"\r\n".join(lines) + b"\r\n\r\n"
    seen = glance(data)
    if seen is not None:
        agrees(seen, data)
