"""RFC 4475 torture messages, as sipgo runs them: every valid message (3.1.1) parses and gives
the fields the RFC names; every invalid one (3.1.2) is refused with the answer the RFC
expects, or dropped where it says so. Sections 3.1.3-3.1.5 pin the core's own answers.

Where the RFC allows either a refusal or a liberal reading, the choice is the refusal,
except for the Date of 3.1.2.12, which the RFC asks not to refuse over unless it matters
(nothing here reads Date).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote

import pytest

from gateway.sip.endpoint import Endpoint, EndpointSettings
from gateway.sip.errors import SipParseError
from gateway.sip.headers import parse_name_addr
from gateway.sip.message import Request, Response
from gateway.sip.parse import parse_message
from gateway.sip.transaction_machines import Send
from gateway.sip.uri import SipUri
from gateway.sip.validate import check_request
from gateway.transport.peer import Peer, Transport

CORPUS = Path(__file__).parent / "fixtures" / "rfc4475"
SRC = Peer(Transport.UDP, "192.0.2.99", 5099)


def load(name: str) -> bytes:
    return (CORPUS / f"{name}.dat").read_bytes()


def request(name: str) -> Request:
    message = parse_message(load(name))
    assert isinstance(message, Request)
    check_request(message)  # what the core checks of every request it accepts
    return message


def response(name: str) -> Response:
    message = parse_message(load(name))
    assert isinstance(message, Response)
    return message


def answers(data: bytes) -> list[Response]:
    """What a node without a call handler sends back for `data` arriving over UDP."""
    endpoint = Endpoint(EndpointSettings(server="lyncgate/test"))
    out = []
    for event in endpoint.receive(data, SRC, None, 0.0):
        assert isinstance(event, Send)
        sent = parse_message(event.data)
        assert isinstance(sent, Response)
        out.append(sent)
    return out


def final(data: bytes) -> Response:
    finals = [r for r in answers(data) if r.status >= 200]
    assert len(finals) == 1
    return finals[0]


def sip(uri: object) -> SipUri:
    assert isinstance(uri, SipUri)
    return uri


# -- 3.1.1 valid messages -----------------------------------------------------------------
def check_wsinv() -> None:
    """3.1.1.1 A Short Tortuous INVITE: folding, LWS around colons and slashes, mixed case
    and compact names, an empty header, escaped quotes in a display name."""
    m = request("wsinv")
    assert (m.method, m.uri_text) == ("INVITE", "sip:vivekg@chair-dnrc.example.com;unknownparam")
    assert sip(m.uri).param("unknownparam") == ""
    assert str(m.to.uri) == "sip:vivekg@chair-dnrc.example.com" and m.to.tag == "1918181833n"
    assert m.from_.display == '"J Rosenberg \\\\\\""' and m.from_.tag == "98asjd8"
    assert str(m.from_.uri) == "sip:jdrosen@example.com"
    assert m.max_forwards == 68
    assert m.call_id == "wsinv.ndaksdj@192.0.2.1"
    assert (m.cseq.seq, m.cseq.method) == (9, "INVITE")
    assert [(v.transport, v.host, v.branch) for v in m.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert m.headers.get("Subject") == ""
    assert m.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert m.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    (route,) = m.routes
    assert sip(route.uri).host == "services.example.com" and sip(route.uri).has_param("lr")
    (contact,) = m.contacts
    assert contact.display == '"Quoted string \\"\\""'
    assert str(contact.uri) == "sip:jdrosen@example.com"
    assert (contact.param("newparam"), contact.param("secondparam"), contact.param("q")) == (
        "newvalue", "", "0.33")
    assert m.content_type is not None and m.content_type.type == "application/sdp"
    assert len(m.body) == 150


def check_intmeth() -> None:
    """3.1.1.2 Wide Range of Valid Characters: a method of every token character, a user
    part holding '?', ',', ';', '/', '&', '=', '+' and '$', NUL/BEL/DEL as quoted-pairs."""
    m = request("intmeth")
    method = "!interesting-Method0123456789_*+`.%indeed'~"
    assert m.method == method and m.cseq.method == method and m.cseq.seq == 139122385
    uri = sip(m.uri)
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert (uri.host, uri.params, uri.headers) == ("example.com", (), "")
    assert m.to.display == '"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f"'
    assert sip(m.to.uri).user == uri.user and m.to.tag is None
    assert m.from_.display == "token1~` token2'+_ token3*%!.-"
    assert m.from_.tag == "_token~1'+`*%!-."
    assert m.from_.param("fromparam''~+*_!.-%") == '"работающий"'
    assert m.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert m.vias[0].branch == "z9hG4bK-.!%66*_+`'~"
    assert m.max_forwards == 255
    assert m.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"
    assert answers(load("intmeth"))[0].status == 501  # parsed, and a method nobody knows


def check_esc01() -> None:
    """3.1.1.3 Valid Use of the % Escaping Mechanism: escapes are kept as written and
    decoded once, never recursively ("value%41" is not "valueA")."""
    m = request("esc01")
    assert sip(m.uri).user_unescaped == "sips:user@example.com"
    assert sip(m.uri).host == "example.net"
    assert sip(m.to.uri).user_unescaped == "user"
    assert sip(m.from_.uri).user_unescaped == "I have spaces" and m.from_.tag == "938"
    (contact,) = m.contacts
    curi = sip(contact.uri)
    assert curi.user_unescaped == "caller"
    assert [unquote(k) for k, _ in curi.params] == ["lr", "name"]
    assert unquote(curi.params[1][1] or "") == "value%41"
    assert len(m.body) == 150


def check_escnull() -> None:
    """3.1.1.4 Escaped Nulls in URIs: %00 is a character of the user part like any other."""
    m = request("escnull")
    assert sip(m.to.uri).user_unescaped == "null-\x00-null"
    assert [sip(c.uri).user_unescaped for c in m.contacts] == ["\x00", "\x00\x00"]


def check_esc02() -> None:
    """3.1.1.5 Use of % When It Is Not an Escape: the method is not REGISTER, the display
    name is "%Z%45", and C%6Fntact is a header of its own (two Contacts, not three)."""
    m = request("esc02")
    assert m.method == "RE%47IST%45R" and m.cseq.method == "RE%47IST%45R"
    assert m.to.display == m.from_.display == '"%Z%45"'
    assert [str(c.uri) for c in m.contacts] == [
        "sip:alias1@host1.example.com", "sip:alias3@host3.example.com"]
    assert m.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"
    assert m.vias[0].branch == "z9hG4bK209%fzsnel234"
    assert answers(load("esc02"))[0].status == 501


def check_lwsdisp() -> None:
    """3.1.1.6 Message with No LWS between Display Name and <."""
    m = request("lwsdisp")
    assert m.from_.display == "caller" and str(m.from_.uri) == "sip:caller@example.com"
    assert m.from_.tag == "323"
    assert answers(load("lwsdisp"))[0].status == 200


def check_longreq() -> None:
    """3.1.1.7 Long Values in Header Fields: long names, values, parameters and 34 Vias."""
    m = request("longreq")
    assert m.to.display == '"I have a user name of ' + "extreme" * 10 + ' proportion"'
    to = sip(m.to.uri)
    assert (to.user, to.host, to.port) == ("user", "example.com", 6000)
    assert to.param("unknownparam1") == "very" + "long" * 20 + "value"
    assert to.param("longparam" + "name" * 25) == "shortvalue"
    assert to.has_param("very" + "long" * 25 + "parameternamewithnovalue")
    assert sip(m.from_.uri).user == "amazinglylongcallername" * 5
    assert m.from_.tag == "12" + "982" * 50 + "424"
    assert m.call_id == "longreq.one" + "really" * 20 + "longcallid"
    assert len(m.vias) == 34
    assert m.vias[-1].branch == "very" + "long" * 50 + "branchvalue"
    assert m.vias[-1].received == "192.0.2.5"
    assert m.headers.get("Unknown-" + "Long" * 20 + "-Name") == (
        "unknown-" + "long" * 20 + "-value; unknown-" + "long" * 20
        + "-parameter-name = unknown-" + "long" * 20 + "-parameter-value")
    assert sip(m.contacts[0].uri).user == "amazinglylongcallername" * 5
    assert len(m.body) == 150


def check_dblreq() -> None:
    """3.1.1.8 Extra Trailing Octets in a UDP Datagram: the REGISTER is the message, the
    INVITE after its Content-Length is ignored."""
    m = request("dblreq")
    assert m.method == "REGISTER" and m.body == b""
    assert m.call_id == "dblreq.0ha0isndaksdj99sdfafnl3lk233412"
    assert b"INVITE" not in m.to_bytes()
    (sent,) = answers(load("dblreq"))
    assert sent.cseq.method == "REGISTER"


def check_semiuri() -> None:
    """3.1.1.9 Semicolon-Separated Parameters in URI User Part: the user is
    "user;par=u%40example.net", and the URI has no parameters."""
    m = request("semiuri")
    uri = sip(m.uri)
    assert (uri.user, uri.host, uri.params) == ("user;par=u%40example.net", "example.com", ())
    assert m.headers.get_all("Accept") == [
        "application/sdp", "application/pkcs7-mime", "multipart/mixed", "multipart/signed",
        "message/sip", "message/sipfrag"]


def check_transports() -> None:
    """3.1.1.10 Varied Transport Types: unknown transports in Via are fine."""
    m = request("transports")
    assert [v.transport for v in m.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    assert m.call_id == "transports.kijh4akdnaqjkwendsasfdj"


def check_mpart01() -> None:
    """3.1.1.11 Multipart MIME Message: the binary body is exactly Content-Length bytes."""
    m = request("mpart01")
    assert m.content_type is not None and m.content_type.type == "multipart/mixed"
    assert m.content_type.param("boundary") == "7a9cbec02ceef655"
    assert len(m.body) == 553 and m.body.startswith(b"--7a9cbec02ceef655\r\n")
    assert m.body.rstrip().endswith(b"--7a9cbec02ceef655--")


def check_unreason() -> None:
    """3.1.1.12 Unusual Reason Phrase: UTF-8 in the reason phrase."""
    m = response("unreason")
    assert m.status == 200
    assert m.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"
    assert len(m.body) == 154


def check_noreason() -> None:
    """3.1.1.13 Empty Reason Phrase."""
    m = response("noreason")
    assert (m.status, m.reason) == (100, "")
    assert m.call_id == "noreason.asndj203insdf99223ndf"


VALID: dict[str, Callable[[], None]] = {
    "wsinv": check_wsinv, "intmeth": check_intmeth, "esc01": check_esc01,
    "escnull": check_escnull, "esc02": check_esc02, "lwsdisp": check_lwsdisp,
    "longreq": check_longreq, "dblreq": check_dblreq, "semiuri": check_semiuri,
    "transports": check_transports, "mpart01": check_mpart01, "unreason": check_unreason,
    "noreason": check_noreason,
}


@pytest.mark.parametrize("name", list(VALID))
def test_valid_message_parses_to_what_the_rfc_says(name: str) -> None:
    VALID[name]()


@pytest.mark.parametrize("name", list(VALID))
def test_valid_message_is_never_answered_400(name: str) -> None:
    assert all(sent.status != 400 for sent in answers(load(name)))


# -- 3.1.2 invalid messages -----------------------------------------------------------------
# name -> (section, status answered, or None: dropped, words of the reason phrase)
INVALID: dict[str, tuple[str, int | None, str]] = {
    "badinv01": ("3.1.2.1", 400, "Via"),
    "clerr": ("3.1.2.2", 400, "Content-Length"),
    "ncl": ("3.1.2.3", 400, "Content-Length"),
    "scalar02": ("3.1.2.4", 400, "CSeq"),
    "scalarlg": ("3.1.2.5", None, ""),  # a response: discarded
    "quotbal": ("3.1.2.6", 400, "To"),
    "ltgtruri": ("3.1.2.7", 400, "URI"),
    "lwsruri": ("3.1.2.8", 400, "request line"),
    "lwsstart": ("3.1.2.9", 400, "request line"),
    "trws": ("3.1.2.10", 400, "request line"),
    "escruri": ("3.1.2.11", 400, "Request-URI"),
    "baddate": ("3.1.2.12", 405, "Method Not Allowed"),  # accepted: see check_baddate
    "regbadct": ("3.1.2.13", 405, "Method Not Allowed"),  # the Contact: see its test
    "badaspec": ("3.1.2.14", 400, "To"),
    "baddn": ("3.1.2.15", 400, "From"),
    "badvers": ("3.1.2.16", 505, "Version"),
    "mismatch01": ("3.1.2.17", 400, "CSeq"),
    "mismatch02": ("3.1.2.18", 501, "Not Implemented"),
    "bigcode": ("3.1.2.19", None, ""),  # a response: dropped
}


@pytest.mark.parametrize("name", list(INVALID))
def test_invalid_message_gets_the_answer_the_rfc_expects(name: str) -> None:
    _, status, words = INVALID[name]
    sent = answers(load(name))
    if status is None:
        assert sent == []
        return
    final_answer = final(load(name))
    assert final_answer.status == status
    assert words.lower() in final_answer.reason.lower()
    # The answer is addressable: it copies what the request had of the headers a
    # response needs, To with a tag of ours.
    assert final_answer.headers.get("Via") and final_answer.headers.get("CSeq")
    assert ";tag=" in (final_answer.headers.get("To") or "")


def test_invalid_request_lines_are_refused_by_the_parser() -> None:
    """3.1.2.7-10: `<>` around the Request-URI, LWS inside it, extra SP between the
    elements and after them are errors, not things to read around."""
    for name in ("lwsruri", "lwsstart", "trws"):
        with pytest.raises(SipParseError) as info:
            parse_message(load(name))
        assert info.value.status_hint == 400
    with pytest.raises(SipParseError):
        request("ltgtruri")


def test_overlarge_scalars_are_refused() -> None:
    """3.1.2.4 and 3.1.2.5: CSeq beyond 2**31, Max-Forwards beyond 255, Expires beyond
    2**32 - 1 are errors whichever one is read first."""
    m = parse_message(load("scalar02"))
    for view in ("cseq", "max_forwards", "expires"):
        with pytest.raises(SipParseError):
            getattr(m, view)
    with pytest.raises(SipParseError):
        response("scalarlg").cseq  # noqa: B018
    with pytest.raises(SipParseError) as info:
        parse_message(load("bigcode"))
    assert "status code" in info.value.reason


def test_baddate_is_accepted() -> None:
    """3.1.2.12: a Date in EST is invalid, but "an element shouldn't reject unless the
    contents of the Date header field were actually important to its processing"; the
    node never reads Date, so the INVITE is accepted with the Date as written."""
    m = request("baddate")
    assert m.headers.get("Date") == "Fri, 01 Jan 2010 16:00:00 EST"
    assert [r.status for r in answers(load("baddate"))] == [100, 405]


def test_regbadct_contact_is_refused_when_read() -> None:
    """3.1.2.13: a Contact URI with headers must be in <>; reading it (as a registrar
    does) is a 400, and the same Contact in brackets is fine."""
    m = request("regbadct")
    with pytest.raises(SipParseError) as info:
        m.contacts  # noqa: B018
    assert info.value.status_hint == 400 and "Contact" in info.value.reason
    value = m.headers.get("Contact") or ""
    bracketed = parse_name_addr(f"<{value}>", "Contact")
    assert sip(bracketed.uri).headers == "Route=%3Csip:sip.example.com%3E"


def test_badvers_505_goes_to_the_source() -> None:
    """3.1.2.16: 505, even though the Via (SIP/7.0/UDP) cannot be read: the source
    address is where the answer goes."""
    endpoint = Endpoint(EndpointSettings(server="lyncgate/test"))
    (sent,) = endpoint.receive(load("badvers"), SRC, None, 0.0)
    assert isinstance(sent, Send) and sent.peer == SRC
    assert sent.data.startswith(b"SIP/2.0 505 ")


# -- 3.1.3 - 3.1.5: what the core answers by itself -------------------------------------------
@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("badbranch", 200),  # 3.1.3.1: the RFC 2543 transaction key stands in for the branch
        ("insuf", 400),  # 3.1.4.1: no Call-ID, From or To
        ("unkscm", 416),  # 3.1.4.2
        ("novelsc", 416),  # 3.1.4.3: soap.beep is never meaningful here
        ("bext01", 420),  # 3.1.4.5
        ("multi01", 400),  # 3.1.4.8: single-value headers given twice
        ("mcl01", 400),  # 3.1.4.9: conflicting Content-Length
        ("zeromf", 200),  # 3.1.4.11: an OPTIONS with Max-Forwards 0 is answered locally
    ],
)
def test_core_answers_to_semantic_tests(name: str, status: int) -> None:
    assert final(load(name)).status == status


def test_bext01_names_the_unsupported_tags() -> None:
    """3.1.4.5: the 420 lists what Require asked for; Proxy-Require is for proxies."""
    sent = final(load("bext01"))
    assert (sent.headers.get("Unsupported") or "").lower() == (
        "nothingsupportsthis, nothingsupportsthiseither")


def test_bcast_response_is_dropped() -> None:
    """3.1.4.10: a 200 whose Via names a broadcast address matches nothing here."""
    assert answers(load("bcast")) == []


def test_insuf_400_copies_what_the_request_has() -> None:
    sent = final(load("insuf"))
    assert sent.reason == "Missing header: To"
    assert "From" not in sent.headers and "Call-ID" not in sent.headers
    assert sent.cseq.method == "INVITE" and sent.headers.get("Via")


@pytest.mark.parametrize(
    "name", ["inv2543", "unksm2", "cparam01", "cparam02", "regescrt", "regaut01", "invut",
             "sdp01"],
)
def test_semantic_tests_for_handlers_parse_and_pass_the_core(name: str) -> None:
    """What is left to a handler (registrar, B2BUA) reaches it: the core's checks pass.
    3.1.5.1 (RFC 2543 syntax) has no branch, no From tag, no Content-Length and no
    Max-Forwards, and is still a request."""
    m = request(name)
    if name == "inv2543":
        assert m.top_via.branch is None and m.from_.tag is None and m.max_forwards is None


def test_every_message_of_the_corpus_is_covered() -> None:
    covered = set(VALID) | set(INVALID) | {
        "badbranch", "insuf", "unkscm", "novelsc", "bext01", "multi01", "mcl01", "zeromf",
        "bcast", "inv2543", "unksm2", "cparam01", "cparam02", "regescrt", "regaut01", "invut",
        "sdp01"}
    assert {p.stem for p in CORPUS.glob("*.dat")} == covered

