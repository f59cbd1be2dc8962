"""C3P, the Centralized Conference Control Protocol, as far as a participant joining by
Conference ID speaks it: the documents it sends (`application/cccp+xml`) and what it reads
from their answers.

- The look-up: [MS-CONFPRO] 2.2.2 `getConference` keyed by `msci:conference-id` (example
  in [MS-CONFPRO] 4.5), sent in a SERVICE to the Lync server. The Open Specifications
  document this request for an organizer's conference ID; how Lync's conferencing
  attendant resolves a *PSTN* Conference ID on the wire is not published (UCMA exposes it
  only as `ConferenceServices.BeginGetConferenceUriByPhoneConferenceId`), so the same
  request carrying the PSTN ID is lyncgate's choice, unverified against a real pool.
- Joining: [MS-CONFBAS] 2.2.3.3 `addUser` in the INVITE to the focus, answered in its 2xx
  ([MS-CONFBAS] 2.2.3.4), and the `addUser` that asks the focus for a place on the A/V MCU
  ([MS-CONFAV]), addressed to the MCU's conference URI.

Answers carry `code` success, pending or failure (the CCCP response codes); a pending
`addUser` is a participant held in the meeting's lobby."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from xml.sax.saxutils import quoteattr

from gateway.conferencing.errors import (
    ConferenceNotFound,
    JoinRefused,
    LookupUnavailable,
    MalformedDocument,
)
from gateway.conferencing.safe_xml import local, parse

CONTENT_TYPE = "application/cccp+xml"
CCCP = "urn:ietf:params:xml:ns:cccp"
CI = "urn:ietf:params:xml:ns:conference-info"
MSCI = "http://schemas.microsoft.com/rtc/2005/08/confinfoextensions"

# [MS-CONFPRO] 2.2.1.2: an organizer's conference-id is 8 to 32 ASCII alphanumerics; PSTN
# Conference IDs are shorter and all digits. Anything else is no Conference ID at all.
_CONFERENCE_ID = re.compile(r"[A-Za-z0-9]{1,32}")
Code = Literal["success", "pending", "failure"]
_CODES: tuple[Code, ...] = ("success", "pending", "failure")
# [MS-CONFPRO]'s reason for a failure that is the server's, not the request's: anything
# else means the conference is not there to be had.
_SERVER_FAILURE = "otherFailure"


@dataclass(frozen=True, slots=True)
class Response:
    """A C3P response: which request it answers, the command, its code and reason, and the
    conference it names (getConference's `conference-info` entity, addUser's `confEntity`)."""

    request_id: int
    command: str
    code: Code
    reason: str
    entity: str


def is_conference_id(text: str) -> bool:
    return _CONFERENCE_ID.fullmatch(text) is not None


def lookup_request(request_id: int, sender: str, factory: str, conference_id: str) -> bytes:
    """The getConference request asking `factory` (the Lync server's focus factory URI) for
    the meeting with this Conference ID."""
    if not is_conference_id(conference_id):
        raise ConferenceNotFound(conference_id, "not a Conference ID")
    return _request(request_id, sender, factory,
                    f"<getConference><conferenceKeys msci:conference-id="
                    f"{quoteattr(conference_id)}/></getConference>")


def add_user_focus(request_id: int, sender: str, focus: str, endpoint: str) -> bytes:
    """The addUser the INVITE to the focus carries: `sender` joins as an attendee with the
    endpoint GUID `endpoint` ([MS-CONFBAS] 2.2.3.3)."""
    return _request(request_id, sender, focus, _add_user(focus, sender, endpoint, ""))


def add_user_mcu(request_id: int, sender: str, focus: str, mcu: str, endpoint: str) -> bytes:
    """The addUser asking the focus to admit `sender` to the A/V MCU at `mcu` (the
    audio-video conference URI), dialling in ([MS-CONFAV])."""
    return _request(request_id, sender, mcu, _add_user(
        focus, sender, endpoint, "<ci:joining-method>dialed-in</ci:joining-method>"))


def _add_user(focus: str, sender: str, endpoint: str, inside: str) -> str:
    return (f"<addUser><conferenceKeys confEntity={quoteattr(focus)}/>"
            f"<ci:user xmlns:ci=\"{CI}\" entity={quoteattr(sender)}>"
            "<ci:roles><ci:entry>attendee</ci:entry></ci:roles>"
            f"<ci:endpoint entity={quoteattr(endpoint)}>{inside}</ci:endpoint>"
            "</ci:user></addUser>")


def _request(request_id: int, sender: str, target: str, command: str) -> bytes:
    return (f"<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<request xmlns=\"{CCCP}\" "
            f"xmlns:msci=\"{MSCI}\" C3PVersion=\"1\" requestId=\"{request_id}\" "
            f"from={quoteattr(sender)} to={quoteattr(target)}>{command}</request>"
            ).encode()


def read_response(body: bytes) -> Response:
    """The response in a C3P answer body; anything that is not one is MalformedDocument."""
    root = parse(body, "C3P response")
    if root.tag != f"{{{CCCP}}}response":
        raise MalformedDocument(f"C3P response: root element {local(root.tag)!r}")
    code_text = root.get("code", "")
    request_id = root.get("requestId", "")
    code = next((c for c in _CODES if c == code_text), None)
    if code is None or not request_id.isdigit():
        raise MalformedDocument(f"C3P response: code {code_text!r}, requestId {request_id!r}")
    commands = list(root)
    if len(commands) != 1:
        raise MalformedDocument(f"C3P response: {len(commands)} commands, not one")
    command = commands[0]
    entity = ""
    info = command.find(f"{{{CCCP}}}conference-info")
    if info is None:
        info = command.find(f"{{{CI}}}conference-info")
    keys = command.find(f"{{{CCCP}}}conferenceKeys")
    if info is not None:
        entity = info.get("entity", "")
    elif keys is not None:
        entity = keys.get("confEntity", "")
    return Response(int(request_id), local(command.tag), code,
                    command.get("reason", "") or root.get("reason", ""), entity)


def focus_of(response: Response, conference_id: str) -> str:
    """The focus URI a look-up found, or why there is none."""
    if response.command != "getConference":
        raise MalformedDocument(f"C3P response: {response.command} answers a look-up")
    if response.code == "failure":
        if response.reason == _SERVER_FAILURE:
            raise LookupUnavailable(response.reason)
        raise ConferenceNotFound(conference_id, response.reason or "the server has none")
    if response.code == "pending" or not response.entity.startswith("sip:"):
        raise MalformedDocument(f"C3P response: look-up {response.code} without a focus URI")
    return response.entity


def admission(response: Response) -> Literal["joined", "lobby"]:
    """What an addUser answer means for the participant: in, or waiting in the lobby."""
    if response.command != "addUser":
        raise MalformedDocument(f"C3P response: {response.command} answers addUser")
    if response.code == "failure":
        raise JoinRefused(f"the meeting refused to add us: {response.reason or 'no reason'}")
    return "joined" if response.code == "success" else "lobby"
