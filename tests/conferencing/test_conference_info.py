"""The roster and lobby state read from conference-info NOTIFYs: a full document then
partial ones merged by entity, stale versions ignored (a flood of repeats changes nothing),
the A/V MCU URI from conf-uris, our endpoint's status as the lobby state, the user cap, and
malformed documents refused without touching the state. The documents written here
validate against RFC 4575's schema, so they are ones a focus may send."""

from __future__ import annotations

from pathlib import Path

import pytest
import xmlschema

from gateway.conferencing.conference_info import MAX_USERS, Roster
from gateway.conferencing.errors import MalformedDocument

CONFERENCE_INFO = xmlschema.XMLSchema(Path(__file__).parent / "fixtures" / "conference-info.xsd")
US = "sip:gw.example.com@vc.example.com"
FOCUS = "sip:alice@example.com;gruu;opaque=app:conf:focus:id:BE92"
AV = "sip:alice@example.com;gruu;opaque=app:conf:audio-video:id:BE92"


def _doc(version: int, users: str, state: str = "full", uris: bool = True) -> bytes:
    description = ("<conference-description><conf-uris><entry>"
                   f"<uri>{AV}</uri><purpose>audio-video</purpose></entry></conf-uris>"
                   "</conference-description>") if uris else ""
    text = ('<conference-info xmlns="urn:ietf:params:xml:ns:conference-info" '
            f'entity="{FOCUS}" state="{state}" version="{version}">{description}'
            f"<users>{users}</users></conference-info>")
    CONFERENCE_INFO.validate(text)
    return text.encode()


def _user(entity: str, status: str, name: str = "", state: str = "full") -> str:
    shown = f"<display-text>{name}</display-text>" if name else ""
    return (f'<user entity="{entity}" state="{state}">{shown}'
            f'<endpoint entity="{{{entity}-ep}}"><status>{status}</status></endpoint></user>')


def test_full_then_partial_documents_merge_and_admit_us() -> None:
    roster = Roster(US)
    assert roster.lobby() == "unknown"
    assert roster.apply(_doc(1, _user("sip:alice@example.com", "connected", "Alice")
                             + _user(US, "pending")))
    assert roster.av_uri == AV and roster.lobby() == "lobby"
    assert roster.apply(_doc(2, _user(US, "connected"), state="partial", uris=False))
    assert roster.lobby() == "admitted"
    assert roster.users["sip:alice@example.com"].display == "Alice"  # kept by the partial
    assert roster.av_uri == AV


def test_removed_from_the_roster_while_waiting_is_refused() -> None:
    roster = Roster(US)
    roster.apply(_doc(1, _user(US, "pending")))
    roster.apply(_doc(2, _user(US, "pending", state="deleted"), state="partial"))
    assert roster.lobby() == "refused"


def test_disconnected_endpoint_is_refused() -> None:
    roster = Roster(US)
    roster.apply(_doc(1, _user(US, "disconnected")))
    assert roster.lobby() == "refused"


def test_a_flood_of_repeats_changes_nothing() -> None:
    """Versions must rise ([RFC4575] 4.6): a thousand copies of an old document are each
    ignored (apply returns False) and the state stays the newest one's."""
    roster = Roster(US)
    roster.apply(_doc(5, _user(US, "connected")))
    stale = _doc(4, _user(US, "disconnected"))
    assert not any(roster.apply(stale) for _ in range(1000))
    assert roster.lobby() == "admitted" and roster.version == 5


@pytest.mark.parametrize("body", [
    b"<conference-info",
    b'<conference-info xmlns="urn:ietf:params:xml:ns:conference-info" version="x"/>',
    b'<other xmlns="urn:ietf:params:xml:ns:conference-info" version="1"/>',
    (b'<conference-info xmlns="urn:ietf:params:xml:ns:conference-info" version="9">'
     b"<users><user><endpoint/></user></users></conference-info>"),
])
def test_malformed_documents_are_refused_and_change_nothing(body: bytes) -> None:
    roster = Roster(US)
    roster.apply(_doc(1, _user(US, "pending")))
    with pytest.raises(MalformedDocument) as caught:
        roster.apply(body)
    assert caught.value.status_hint == 502
    assert roster.version == 1 and roster.lobby() == "lobby"


def test_a_roster_beyond_the_cap_is_refused() -> None:
    users = "".join(f'<user entity="sip:u{i}@example.com"/>' for i in range(MAX_USERS + 1))
    with pytest.raises(MalformedDocument, match="more than"):
        Roster(US).apply(_doc(1, users))
