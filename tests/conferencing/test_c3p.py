"""The C3P documents the gateway sends validate against the C3P and conference-info schemas
(fixtures/README.md says which are published and which derived) and read back as the spec
examples do; answers are read into focus URIs, 'not found', lobby or refusal, and
malformed or hostile answers become a MalformedDocument with status 502."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import xmlschema

from gateway.conferencing import c3p
from gateway.conferencing.errors import (
    ConferenceNotFound,
    JoinRefused,
    LookupUnavailable,
    MalformedDocument,
)

FIXTURES = Path(__file__).parent / "fixtures"
CCCP = xmlschema.XMLSchema(FIXTURES / "cccp.xsd")
US = "sip:gw.example.com@vc.example.com"
FOCUS = "sip:alice@example.com;gruu;opaque=app:conf:focus:id:BE92"
AV = "sip:alice@example.com;gruu;opaque=app:conf:audio-video:id:BE92"
FACTORY = "sip:pool.example.com;gruu;opaque=app:conf:focusfactory"
GUID = "{1d3e0d3a-5c2f-4ad2-9b4f-0e7c2f6f3a10}"


def _response(code: str, command: str, inside: str = "", reason: str = "") -> bytes:
    why = f' reason="{reason}"' if reason else ""
    return (f'<response xmlns="urn:ietf:params:xml:ns:cccp" C3PVersion="1" requestId="3" '
            f'from="{FACTORY}" to="{US}" code="{code}"><{command}{why}>{inside}'
            f'</{command}></response>').encode()


def test_spec_example_request_validates_against_the_schema() -> None:
    """The schema fixture accepts [MS-CONFPRO] 4.5's own request: it is not stricter than
    the spec, so what it refuses in ours is ours."""
    CCCP.validate(str(FIXTURES / "confpro-4.5-getConference-request.xml"))


def test_lookup_request_validates_and_has_the_shape_of_confpro_4_5() -> None:
    body = c3p.lookup_request(5, US, FACTORY, "572450")
    CCCP.validate(body.decode())
    ours, spec = ET.fromstring(body), ET.parse(FIXTURES / "confpro-4.5-getConference-request.xml")
    keys = f"{{{c3p.CCCP}}}getConference/{{{c3p.CCCP}}}conferenceKeys"
    assert ours.find(keys).attrib == {f"{{{c3p.MSCI}}}conference-id": "572450"}  # type: ignore[union-attr]
    assert spec.getroot().find(keys) is not None
    assert ours.get("to") == FACTORY and ours.get("requestId") == "5"


@pytest.mark.parametrize("conference_id", ["", "12 34", "1234567890123456789012345678901234",
                                           "<x/>", "12345@example.com"])
def test_lookup_refuses_what_is_not_a_conference_id(conference_id: str) -> None:
    with pytest.raises(ConferenceNotFound) as caught:
        c3p.lookup_request(1, US, FACTORY, conference_id)
    assert caught.value.status_hint == 404


def test_add_user_documents_validate_and_escape() -> None:
    """Both addUser requests (focus INVITE, A/V MCU) validate; URIs with '&' and quotes are
    escaped, not spliced into the markup."""
    tricky = 'sip:a&b@example.com;x="<y>"'
    for body in (c3p.add_user_focus(1, tricky, FOCUS, GUID),
                 c3p.add_user_mcu(2, tricky, FOCUS, AV, GUID)):
        CCCP.validate(body.decode())
        user = ET.fromstring(body).find(f".//{{{c3p.CI}}}user")
        assert user is not None and user.get("entity") == tricky
    mcu = ET.fromstring(c3p.add_user_mcu(2, US, FOCUS, AV, GUID))
    assert mcu.get("to") == AV
    assert mcu.findtext(f".//{{{c3p.CI}}}joining-method") == "dialed-in"


def test_spec_add_user_response_reads_as_joined() -> None:
    response = c3p.read_response((FIXTURES / "confbas-2.2.3.4-addUser-response.xml").read_bytes())
    assert response.command == "addUser" and response.code == "success"
    assert response.entity == "sip:user@fabrikam.com;gruu;opaque=app:conf:focus:id:BE92"
    assert c3p.admission(response) == "joined"


def test_spec_response_names_its_conference_by_conference_info_entity() -> None:
    body = (FIXTURES / "confbas-2.2.3.14-deleteConference-response.xml").read_bytes()
    assert c3p.read_response(body).entity == (
        "sip:alice@fabrikam.com;gruu;opaque=app:conf:focus:id:5D3747C")


def test_lookup_answers() -> None:
    found = c3p.read_response(_response(
        "success", "getConference", f'<conference-info entity="{FOCUS}"/>'))
    assert c3p.focus_of(found, "572450") == FOCUS
    with pytest.raises(ConferenceNotFound) as missing:
        c3p.focus_of(c3p.read_response(_response("failure", "getConference",
                                                  reason="conferenceDoesNotExist")), "1")
    assert missing.value.status_hint == 404 and "conferenceDoesNotExist" in missing.value.reason
    with pytest.raises(LookupUnavailable) as down:
        c3p.focus_of(c3p.read_response(_response("failure", "getConference",
                                                  reason="otherFailure")), "1")
    assert down.value.status_hint == 503
    with pytest.raises(MalformedDocument):  # success naming no focus
        c3p.focus_of(c3p.read_response(_response("success", "getConference")), "1")


def test_add_user_pending_is_the_lobby_and_failure_a_refusal() -> None:
    keys = f'<conferenceKeys confEntity="{FOCUS}"/>'
    assert c3p.admission(c3p.read_response(_response("pending", "addUser", keys))) == "lobby"
    with pytest.raises(JoinRefused) as refused:
        c3p.admission(c3p.read_response(_response("failure", "addUser", keys,
                                                  reason="deniedBySecurity")))
    assert refused.value.status_hint == 403


@pytest.mark.parametrize("body", [
    b"<response",                                           # truncated
    b"not xml at all",
    b'<request xmlns="urn:ietf:params:xml:ns:cccp"/>',      # a request, not a response
    _response("maybe", "addUser"),                          # unknown code
    _response("success", "addUser").replace(b'requestId="3"', b'requestId="x"'),
    b'<response xmlns="urn:ietf:params:xml:ns:cccp" code="success" requestId="1"/>',
    (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
     b'<response xmlns="urn:ietf:params:xml:ns:cccp" code="success" requestId="1">'
     b'<addUser>&b;</addUser></response>'),               # entity expansion
    (b'<!DOCTYPE r SYSTEM "file:///etc/passwd"><response/>'),   # external DTD
    b"<response>" + b"x" * (600 * 1024) + b"</response>",    # beyond the size cap
])
def test_malformed_or_hostile_answers_are_502(body: bytes) -> None:
    with pytest.raises(MalformedDocument) as caught:
        c3p.read_response(body)
    assert caught.value.status_hint == 502


def test_a_dtd_is_refused_before_any_entity_is_declared() -> None:
    """The billion-laughs document is refused for its DTD, not parsed and then found odd."""
    bomb = (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "' + b"a" * 1000 + b'">'
            + b"".join(b'<!ENTITY a%d "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">' % i for i in range(9))
            + b']><response>&a8;</response>')
    with pytest.raises(MalformedDocument) as caught:
        c3p.read_response(bomb)
    assert "document type declaration" in caught.value.reason
