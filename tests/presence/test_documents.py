"""The presence documents against their schemas (tests/presence/fixtures/README.md says
which are published and which derived), for Available and Offline answers, with text that
needs escaping; and the Lync request bodies the node reads against [MS-PRES]'s."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import xmlschema
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.presence import documents
from gateway.presence.answer import Answer, answer
from gateway.presence.bodies import read_batch
from tests.kit.presence import batch_body, router

FIXTURES = Path(__file__).parent / "fixtures"
PIDF = xmlschema.XMLSchema(FIXTURES / "pidf.xsd")
CATEGORIES = xmlschema.XMLSchema(FIXTURES / "ms-categories.xsd")
CATEGORY_LIST = xmlschema.XMLSchema(FIXTURES / "categorylist.xsd")
WHEN = "2026-12-06T03:40:00Z"
ROUTER = router()
URL = "http://gw.example.com/avatars/rule/rooms%20%26%20more"

AVAILABLE = Answer("sip:a@vc.example.com", True, "Rooms & <more>", 'say "hi" & go',
                   "/avatars/rule/rooms%20%26%20more", "matched")
OFFLINE = Answer("sip:x@vc.example.com", False, "", "", "", "no rule")


@pytest.mark.parametrize("found", [AVAILABLE, OFFLINE])
def test_pidf_validates_against_rfc_3863(found: Answer) -> None:
    text = documents.pidf(found, "sip:a@vc.example.com;x=\"q\"", WHEN)
    PIDF.validate(text)
    basic = ET.fromstring(text).find(".//{urn:ietf:params:xml:ns:pidf}basic")
    assert basic is not None and basic.text == ("open" if found.available else "closed")


@pytest.mark.parametrize("found", [AVAILABLE, OFFLINE])
def test_categories_validate_and_carry_availability_name_description_and_avatar(
        found: Answer) -> None:
    text = documents.categories(found, "sip:a@vc.example.com", URL if found.available else "",
                                7, WHEN)
    CATEGORIES.validate(text)
    root = ET.fromstring(text)
    ns = {"c": "http://schemas.microsoft.com/2006/09/sip/categories",
          "s": "http://schemas.microsoft.com/2006/09/sip/state",
          "cc": "http://schemas.microsoft.com/2006/09/sip/contactcard"}
    assert root.findtext("c:category/s:state/s:availability", namespaces=ns) == str(
        3500 if found.available else 18500)
    card = root.find("c:category/cc:contactCard", ns)
    if not found.available:
        assert card is None
        return
    assert card is not None
    assert card.findtext("cc:identity/cc:name/cc:displayName", namespaces=ns) == found.name
    assert card.findtext("cc:description", namespaces=ns) == found.description
    assert card.findtext("cc:photo/cc:uri", namespaces=ns) == URL
    assert {c.get("version") for c in root} == {"7"}


@pytest.mark.parametrize("found", [AVAILABLE, OFFLINE])
def test_the_legacy_msrtc_pidf_is_well_formed_with_its_availability(found: Answer) -> None:
    root = ET.fromstring(documents.msrtc_pidf(found, "sip:a@vc.example.com"))
    ns = "{http://schemas.microsoft.com/2002/09/sip/presence}"
    availability = root.find(f"{ns}availability")
    assert availability is not None
    assert availability.get("aggregate") == ("300" if found.available else "0")


@settings(max_examples=200, deadline=None)
@given(name=st.text(max_size=40), description=st.text(max_size=200))
def test_any_configured_text_still_gives_valid_documents(name: str, description: str) -> None:
    # XML 1.0 cannot carry most control characters; the config's strings are TOML's, which
    # can. Such a character is dropped rather than written as an unparseable document.
    found = Answer("sip:a@b", True, name, description, "/avatars/rule/x", "")
    PIDF.validate(documents.pidf(found, "sip:a@b", WHEN))
    CATEGORIES.validate(documents.categories(found, "sip:a@b", URL, 1, WHEN))
    ET.fromstring(documents.msrtc_pidf(found, "sip:a@b"))


def test_a_batch_is_multipart_related_with_rlmi_first_and_each_part_valid() -> None:
    parts = [(f"sip:r{i}@vc.example.com",
              documents.categories(AVAILABLE, f"sip:r{i}@vc.example.com", URL, 1, WHEN))
             for i in range(3)]
    content_type, body = documents.batch(documents.CATEGORIES, "sip:alice@example.com",
                                         parts, 1)
    boundary = content_type.rpartition("boundary=")[2]
    chunks = body.split(f"--{boundary}")
    assert chunks[0] == "" and chunks[-1] == "--\r\n"
    bodies = [chunk.partition("\r\n\r\n")[2].rstrip("\r\n") for chunk in chunks[1:-1]]
    rlmi = ET.fromstring(bodies[0])
    assert [r.get("uri") for r in rlmi] == [uri for uri, _ in parts]
    for text in bodies[1:]:
        CATEGORIES.validate(text)


def test_lync_batch_bodies_the_node_reads_are_valid_category_lists() -> None:
    body = batch_body(["sip:a@vc.example.com", "sip:b@vc.example.com"])
    root = ET.fromstring(body)
    listed = root.find(".//{http://schemas.microsoft.com/2006/09/sip/categorylist}categoryList")
    assert listed is not None
    CATEGORY_LIST.validate(ET.tostring(listed))
    batch = read_batch(body)
    assert batch.resources == ("sip:a@vc.example.com", "sip:b@vc.example.com")
    assert batch.categories == ("contactCard", "state")


def test_who_is_available_follows_services_then_rules() -> None:
    r = router()
    board = answer(r, "sip:meet.board@vc.example.com")
    assert board.available and board.name == "Board room"
    assert board.avatar_path == "/avatars/service/Board%20room"
    room = answer(r, "london-room003@vc.example.com")
    assert room.available and room.name == "rooms" and "priority 10" in room.why
    typo = answer(r, "london-rooom003@vc.example.com")
    assert not typo.available and typo.availability == 18500
    assert r.is_known_alias("london-room003@vc.example.com")


@settings(max_examples=300, deadline=None)
@given(user=st.sampled_from(["meet.board", "london-room003", "london-rooom003", "MEET.BOARD",
                             "x-room999", "", "paris-room04"]),
       domain=st.sampled_from(["vc.example.com", "VC.example.com", "example.com"]),
       form=st.sampled_from(["{u}@{d}", "sip:{u}@{d}", "sips:{u}@{d}:5061;transport=tls",
                             "<sip:{u}@{d}>", "{u}*1234@{d}"]))
def test_known_agrees_with_is_known_alias(user: str, domain: str, form: str) -> None:
    r = ROUTER
    alias = form.format(u=user, d=domain)
    assert (r.known(alias) is not None) == r.is_known_alias(alias)
    assert answer(r, alias).available == r.is_known_alias(alias)



def test_the_older_adrl_batch_and_format_choice() -> None:
    body = (b'<adhoclist xmlns="urn:ietf:params:xml:ns:adrl" uri="sip:w@example.com" '
            b'name="sip:w@example.com"><create><resource uri="sip:a@vc.example.com"/>'
            b'<resource uri="sip:b@vc.example.com"/></create></adhoclist>')
    assert read_batch(body) == read_batch(body.replace(b"<create>", b"<create>\n"))
    assert read_batch(body).resources == ("sip:a@vc.example.com", "sip:b@vc.example.com")
    assert read_batch(body).categories == ()
    choose = documents.choose_format
    assert choose([], False) == documents.PIDF  # RFC 3856: no Accept means PIDF
    assert choose([], True) == documents.CATEGORIES
    assert choose(["application/rlmi+xml", "text/xml+msrtc.pidf", "multipart/related"],
                  False) == documents.MSRTC_PIDF
    assert choose(["application/xpidf+xml", "*/*"], False) == documents.PIDF
    assert choose(["application/xpidf+xml"], False) is None
