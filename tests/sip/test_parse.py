"""The parser: what it reads from real-world messages, what it refuses and with which status."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.sip.errors import SipError, SipParseError
from gateway.sip.headers import parse_name_addr
from gateway.sip.message import Request, Response, make_response
from gateway.sip.parse import MAX_MESSAGE, error_response, parse_message
from gateway.sip.uri import SipUri, TelUri, parse_uri

OPTIONS = (
    b"OPTIONS sip:ping@127.0.0.1:5060 SIP/2.0\r\n"
    b"v: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-1;rport\r\n"
    b"f: <sip:probe@127.0.0.1>;tag=p\r\n"
    b"t: <sip:ping@127.0.0.1>\r\n"
    b"i: probe-1\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"Max-Forwards: 70\r\n"
    b"l: 0\r\n\r\n"
)


def test_lync_invite_typed_views(lync_invite: bytes) -> None:
    msg = parse_message(lync_invite, datagram=False)
    assert isinstance(msg, Request)
    assert msg.method == "INVITE"
    assert [v.transport for v in msg.vias] == ["TLS", "TLS"]
    assert msg.top_via.branch == "z9hG4bK1C1B8C7D.5C2E5A8E4E2A7F18"
    assert msg.from_.tag == "a1b2c3d4e5" and msg.from_.param("epid") == "8f2d7e6b1c"
    assert msg.to.tag is None
    assert msg.cseq.seq == 1 and msg.cseq.method == "INVITE"
    contact = msg.contacts[0]
    assert contact.sip_uri.param("opaque") == "user:epid:xNHBS2dFEFGJxxQm4uRBhQAA"
    assert contact.sip_uri.has_param("gruu")
    rr = msg.record_routes[0].sip_uri
    assert rr.param("ms-route-sig") == "fgYzQkw8-Sfy_OLvU5hE1oOd_GcZT7wqnc"
    assert rr.has_param("lr") and rr.transport == "tls"
    assert "ms-early-media" in msg.tokens("Supported") and "100rel" in msg.tokens("Supported")
    assert msg.session_expires is not None and msg.session_expires.delta == 1800
    ctype = msg.content_type
    assert ctype is not None and ctype.type == "multipart/alternative"
    assert ctype.param("boundary") == "fBpPKSsLpkk7z9bwWz9IMqKUhHN9DKnl"
    pai = msg.headers.get_all("P-Asserted-Identity")
    assert len(pai) == 2 and pai[1] == "<tel:+441234567890>"
    assert msg.body.endswith(b"--fBpPKSsLpkk7z9bwWz9IMqKUhHN9DKnl--\r\n")


def test_unchanged_message_serialises_to_the_same_bytes(lync_invite: bytes) -> None:
    msg = parse_message(lync_invite)
    assert msg.to_bytes() == lync_invite


def test_changed_message_keeps_unknown_headers_in_order(lync_invite: bytes) -> None:
    msg = parse_message(lync_invite)
    names_before = [n for n, _ in msg.headers]
    msg.set_header("Max-Forwards", "68")
    again = parse_message(msg.to_bytes())
    assert [n for n, _ in again.headers] == names_before
    assert again.headers.get("ms-endpoint-location-data") == (
        "NetworkScope;ms-media-location-type=Intranet"
    )
    assert again.max_forwards == 68
    assert again.body == msg.body


def test_compact_forms_and_folding() -> None:
    folded = OPTIONS.replace(b"CSeq: 1 OPTIONS\r\n", b"CSeq: 1\r\n  OPTIONS\r\n")
    msg = parse_message(folded)
    assert msg.call_id == "probe-1"
    assert msg.cseq.method == "OPTIONS"
    assert msg.headers.get("Content-Length") == "0"
    assert msg.from_.tag == "p"


def test_comma_joined_and_repeated_via_are_one_list() -> None:
    data = OPTIONS.replace(
        b"v: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-1;rport\r\n",
        b"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-1, SIP/2.0/TCP [2001:db8::1]:5070"
        b";branch=z9hG4bK-2;received=192.0.2.1\r\n"
        b"Via: SIP/2.0/TLS h.example.com;branch=z9hG4bK-3\r\n",
    )
    vias = parse_message(data).vias
    assert [v.branch for v in vias] == ["z9hG4bK-1", "z9hG4bK-2", "z9hG4bK-3"]
    assert vias[1].host == "[2001:db8::1]" and vias[1].port == 5070
    assert vias[1].received == "192.0.2.1"


def test_quoted_display_name_with_comma_and_escaped_quote() -> None:
    data = OPTIONS.replace(
        b"f: <sip:probe@127.0.0.1>;tag=p",
        b'f: "Smith, \\"Bob\\"" <sip:bob%40work@example.com>;tag=p',
    )
    msg = parse_message(data)
    assert msg.from_.display == '"Smith, \\"Bob\\""'
    uri = msg.from_.sip_uri
    assert uri.user == "bob%40work" and uri.user_unescaped == "bob@work"


def test_quoted_display_name_may_hold_angle_brackets() -> None:
    """A '<' inside a quoted display name is text: the address is the one after it."""
    data = OPTIONS.replace(
        b"f: <sip:probe@127.0.0.1>;tag=p", b'f: "Bob <Boss>" <sip:bob@example.com>;tag=1'
    )
    msg = parse_message(data)
    assert msg.from_.display == '"Bob <Boss>"'
    assert str(msg.from_.uri) == "sip:bob@example.com" and msg.from_.tag == "1"
    for bad, words in ((b'f: "Bob <sip:bob@example.com>', "unterminated display name"),
                       (b'f: "Bob" sip:bob@example.com', "expected '<'")):
        with pytest.raises(SipParseError, match=words):
            parse_message(OPTIONS.replace(b"f: <sip:probe@127.0.0.1>;tag=p", bad)).from_  # noqa: B018


def test_stamping_the_top_via_keeps_the_parsed_views() -> None:
    """Replacing the top Via (received/rport on arrival) updates the Via list in place and
    the serialised message, without discarding the other views already parsed."""
    msg = parse_message(OPTIONS)
    from_ = msg.from_
    msg.set_top_via(msg.top_via.with_params((*msg.top_via.params, ("received", "192.0.2.9"))))
    assert msg.top_via.received == "192.0.2.9" and msg.from_ is from_
    again = parse_message(msg.to_bytes())
    assert again.top_via.received == "192.0.2.9" and again.top_via.branch == "z9hG4bK-1"


def test_tel_uri_and_other_schemes() -> None:
    msg = parse_message(OPTIONS.replace(b"sip:ping@127.0.0.1:5060", b"tel:+14155550100"))
    assert isinstance(msg, Request) and isinstance(msg.uri, TelUri)
    sips = parse_message(OPTIONS.replace(b"sip:ping@127.0.0.1:5060", b"sips:a@[::1]:5061"))
    assert isinstance(sips, Request) and isinstance(sips.uri, SipUri)
    assert sips.uri.host_bare == "::1" and sips.uri.port == 5061


def test_datagram_bytes_past_content_length_are_dropped() -> None:
    data = OPTIONS.replace(b"l: 0", b"l: 3") + b"abcTRAILING"
    msg = parse_message(data, datagram=True)
    assert msg.body == b"abc"


@pytest.mark.parametrize(
    ("data", "status", "words"),
    [
        (OPTIONS.replace(b"l: 0", b"l: 99"), 400, "Content-Length"),
        (OPTIONS.replace(b"l: 0", b"l: -1"), 400, "Content-Length"),
        (OPTIONS.replace(b"SIP/2.0\r\nv:", b"SIP/7.0\r\nv:"), 505, "Version"),
        (OPTIONS[:-4] + b"\r\nX-Pad: " + b"a" * MAX_MESSAGE + b"\r\n\r\n", 513, "Too Large"),
        (OPTIONS.replace(b"Max-Forwards: 70\r\n", b"Max Forwards: 70\r\n"), 400, "header name"),
        (OPTIONS.replace(b"\r\nl: 0", b"\r\nl: 0").replace(b"\r\n\r\n", b"\r\n"), 400, "end"),
    ],
)
def test_malformed_messages_carry_their_status(data: bytes, status: int, words: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert info.value.status_hint == status
    assert words.lower() in info.value.reason.lower()


@pytest.mark.parametrize(
    "data",
    [
        OPTIONS.replace(b"CSeq: 1 OPTIONS", "CSeq: \u00b2 OPTIONS".encode()),
        OPTIONS.replace(b"Max-Forwards: 70", "Max-Forwards: \u0667\u0660".encode()),
        OPTIONS.replace(b"l: 0", "l: \u0660".encode()),
        "SIP/2.0 \u00b2\u00b2\u00b2 OK\r\nContent-Length: 0\r\n\r\n".encode(),
    ],
)
def test_digits_of_other_scripts_are_a_400_not_a_crash(data: bytes) -> None:
    """str.isdigit() takes '²' and Arabic-Indic digits, which int() refuses: in CSeq,
    Max-Forwards, Content-Length or a status code they are a 400, never a ValueError."""
    with pytest.raises(SipParseError) as info:
        msg = parse_message(data)
        msg.cseq  # noqa: B018
        msg.max_forwards  # noqa: B018
    assert info.value.status_hint == 400


def test_rport_in_digits_of_another_script_is_no_port() -> None:
    """The same digits as an rport value give no port rather than a ValueError."""
    rport = OPTIONS.replace(b";rport", ";rport=\u0665\u0660\u0666\u0660".encode())
    assert parse_message(rport).top_via.rport is None


def test_bad_header_is_named_when_read() -> None:
    msg = parse_message(OPTIONS.replace(b"CSeq: 1 OPTIONS", b"CSeq: one OPTIONS"))
    with pytest.raises(SipParseError, match="CSeq"):
        msg.cseq  # noqa: B018


def test_error_response_answers_a_request_and_drops_garbage() -> None:
    bad = OPTIONS.replace(b"SIP/2.0\r\nv:", b"SIP/3.0\r\nv:")
    with pytest.raises(SipParseError) as info:
        parse_message(bad)
    response = error_response(bad, info.value, "tag1")
    assert response is not None and response.status == 505
    assert response.to.tag == "tag1" and response.call_id == "probe-1"
    assert error_response(b"\x00\x01garbage", SipParseError(400, "x"), "t") is None
    a_response = b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"
    assert error_response(a_response, SipParseError(400, "x"), "t") is None


def test_make_response_copies_dialog_headers_and_adds_to_tag(lync_invite: bytes) -> None:
    invite = parse_message(lync_invite)
    assert isinstance(invite, Request)
    ringing = make_response(invite, 180, to_tag="gw1")
    assert ringing.to.tag == "gw1"
    assert [v.branch for v in ringing.vias] == [v.branch for v in invite.vias]
    assert ringing.record_routes[0].sip_uri.param("ms-route-sig")
    trying = make_response(invite, 100, to_tag="gw1")
    assert trying.to.tag is None and not trying.record_routes
    again = parse_message(ringing.to_bytes())
    assert isinstance(again, Response) and again.status == 180


def test_response_parse() -> None:
    data = (
        b"SIP/2.0 486 Busy Here\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-x\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: c\r\nCSeq: 7 INVITE\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(data)
    assert isinstance(msg, Response)
    assert (msg.status, msg.reason, msg.to.tag, msg.cseq.seq) == (486, "Busy Here", "2", 7)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_raise_only_sip_errors(data: bytes) -> None:
    try:
        msg = parse_message(data)
    except SipError:
        return
    # Whatever parsed must also survive typed access without foreign exceptions.
    for attr in ("vias", "from_", "to", "call_id", "cseq", "contacts", "max_forwards"):
        with contextlib.suppress(SipError):
            getattr(msg, attr)


_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=12)
_value = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=",\"<>\\"),
    min_size=1,
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(
    user=_token,
    host=_token,
    branch=_token,
    extra=st.lists(st.tuples(_token.map(lambda t: "X-" + t), _value), max_size=6),
    body=st.binary(max_size=200),
)
def test_generated_messages_round_trip(
    user: str, host: str, branch: str, extra: list[tuple[str, str]], body: bytes
) -> None:
    req = Request("MESSAGE", f"sip:{user}@{host}")
    req.headers.add("Via", f"SIP/2.0/UDP {host}:5060;branch=z9hG4bK{branch}")
    req.headers.add("From", f"<sip:{user}@{host}>;tag={branch}")
    req.headers.add("To", f"<sip:{user}@{host}>")
    req.headers.add("Call-ID", f"{branch}@{host}")
    req.headers.add("CSeq", "1 MESSAGE")
    for name, value in extra:
        req.headers.add(name, value)
    req.set_body(body, "text/plain")
    data = req.to_bytes()
    again = parse_message(data)
    assert again.to_bytes() == data
    assert isinstance(again, Request) and again.body == body
    assert [(n, v) for n, v in again.headers] == [(n, v) for n, v in req.headers]


def _split_reference(text: str, sep: str) -> list[str]:
    """A character-by-character reading of quoted-string rules (RFC 3261 25.1)."""
    parts, quoted, start, i = [], False, 0, 0
    while i < len(text):
        ch = text[i]
        if quoted and ch == "\\":
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    if quoted:
        raise SipError(400, "unterminated")
    parts.append(text[start:])
    return parts


@given(st.text(alphabet='ab;,"\\= ', max_size=40), st.sampled_from([";", ","]))
def test_split_outside_quotes_matches_the_reference(text: str, sep: str) -> None:
    from gateway.sip.headers import _split_unquoted

    try:
        expected = _split_reference(text, sep)
    except SipError:
        with pytest.raises(SipError):
            _split_unquoted(text, sep)
        return
    assert _split_unquoted(text, sep) == expected


# RFC 3261 25.1 quoted-string: any text, with '"' and '\' escaped by a backslash.
_quoted = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20
).map(lambda text: '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')
_display = st.one_of(st.none(), _quoted, st.lists(_token, min_size=1, max_size=3).map(" ".join))


@settings(max_examples=300, deadline=None)
@given(displays=st.lists(st.tuples(_display, _token, _token), min_size=1, max_size=3))
def test_generated_name_addrs_parse_to_what_was_written(
    displays: list[tuple[str | None, str, str]]
) -> None:
    """Display names, quoted ones holding '<', '>', ',', ';' and escapes included, come
    back as written, with the address and parameters after them; also as a comma-joined
    Contact list."""
    entries = [(f"{d} " if d else "") + f"<sip:{user}@{host}>;tag={user}"
               for d, user, host in displays]
    for (display, user, host), text in zip(displays, entries, strict=True):
        parsed = parse_name_addr(text, "From")
        assert (parsed.display, str(parsed.uri), parsed.tag) == (
            display, f"sip:{user}@{host}", user
        )
    contact = f"m: {', '.join(entries)}\r\nl: 0".encode()
    msg = parse_message(OPTIONS.replace(b"l: 0", contact))
    assert [c.display for c in msg.contacts] == [d for d, _, _ in displays]


@pytest.mark.parametrize(
    ("text", "user", "host", "params", "headers"),
    [
        ("sip:+1-212-555-1212;phone-context=example.com@gw.example.com;user=phone",
         "+1-212-555-1212;phone-context=example.com", "gw.example.com", (("user", "phone"),), ""),
        ("sip:a/b?c,d&e=f+g$h@host.example:5070;transport=tcp?X=1",
         "a/b?c,d&e=f+g$h", "host.example", (("transport", "tcp"),), "X=1"),
        ("sip:user;par=u%40example.net@example.com", "user;par=u%40example.net", "example.com",
         (), ""),
        # The common reading first: '@' inside the headers leaves the host where it was.
        ("sip:u@h.example.com?Route=x@y", "u", "h.example.com", (), "Route=x@y"),
        ("sip:h.example.com;lr?Replaces=a%40b", None, "h.example.com", (("lr", None),),
         "Replaces=a%40b"),
    ],
)
def test_user_part_may_hold_user_unreserved_characters(
    text: str, user: str | None, host: str, params: tuple[tuple[str, str | None], ...],
    headers: str,
) -> None:
    """RFC 3261 user-unreserved (';', '?', '/', ',', '&', '=', '+', '$'), as tel-style users
    with ;phone-context write them: the user is everything before the '@' (issue 22)."""
    uri = parse_uri(text)
    assert isinstance(uri, SipUri)
    assert (uri.user, uri.host, uri.params, uri.headers) == (user, host, params, headers)
    assert str(uri) == text


def test_name_addr_forms_rfc4475_refuses() -> None:
    """Unquoted display names of non-token characters, spaces inside <>, and '?' in an
    addr-spec are 400s; token display names, UTF-8 ones and quoted ones are fine."""
    for bad in ('Bell, Alexander <sip:a.g.bell@example.com>;tag=43',
                '"Watson, Thomas" < sip:t.watson@example.org >',
                'sip:user@example.com?Route=%3Csip:sip.example.com%3E'):
        with pytest.raises(SipParseError) as info:
            parse_name_addr(bad, "From")
        assert info.value.status_hint == 400 and info.value.reason.startswith("Bad header: From")
    assert parse_name_addr("caller<sip:c@example.com>", "From").display == "caller"
    assert parse_name_addr("Jürgen Groß <sip:j@example.com>", "From").display == "Jürgen Groß"
    assert parse_name_addr('"Bell, A." <sip:b@example.com>', "From").display == '"Bell, A."'
