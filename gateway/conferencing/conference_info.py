"""The meeting as its conference-info NOTIFYs describe it ([RFC4575], with [MS-CONFBAS]
2.2.2.2's extensions): who is in the roster, the A/V MCU's conference URI, and whether the
focus still holds us in the lobby.

A focus sends a full document first, then partial ones that change users by entity
([RFC4575] 4.6). Each document must carry a higher version than the last; one that does
not is a repeat or arrives out of order and changes nothing, so a NOTIFY flood costs its
parse and no state. The roster is capped: a meeting larger than `MAX_USERS` is reported
as malformed rather than held."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from xml.etree.ElementTree import Element

from gateway.conferencing.errors import MalformedDocument
from gateway.conferencing.safe_xml import parse

CONTENT_TYPE = "application/conference-info+xml"
EVENT = "conference"
CI = "urn:ietf:params:xml:ns:conference-info"
# Lync Server's largest meeting is 1,000 participants ("large meeting" limits); a roster
# past that is not a Lync meeting's.
MAX_USERS = 1000

Lobby = Literal["unknown", "lobby", "admitted", "refused"]
# [RFC4575] 5.6.4's endpoint states as a participant waiting to be let in reads them.
_ADMITTED = frozenset({"dialing-in", "alerting", "connected", "on-hold", "muted-via-focus"})
_GONE = frozenset({"disconnecting", "disconnected"})


@dataclass(frozen=True, slots=True)
class Participant:
    entity: str
    display: str
    # the status of each endpoint the document lists for this user, by endpoint entity
    endpoints: tuple[tuple[str, str], ...]


@dataclass(slots=True)
class Roster:
    """One meeting's conference-info state, fed each NOTIFY body in turn."""

    me: str  # our user entity, whose endpoint status is the lobby state
    version: int = -1
    av_uri: str = ""
    users: dict[str, Participant] = field(default_factory=dict)
    seen_me: bool = False  # we were in the roster once: gone from it now means sent away

    def apply(self, body: bytes) -> bool:
        """Take a NOTIFY body in; False when it was stale (version not higher) and ignored.
        A document that cannot be read raises MalformedDocument and changes nothing."""
        root = parse(body, "conference-info")
        if root.tag != f"{{{CI}}}conference-info":
            raise MalformedDocument("conference-info: wrong root element")
        version_text = root.get("version", "")
        if not version_text.isdigit():
            raise MalformedDocument(f"conference-info: version {version_text!r}")
        version = int(version_text)
        if version <= self.version:
            return False
        full = root.get("state", "full") == "full"
        users = {} if full else dict(self.users)
        av_uri = "" if full else self.av_uri
        for entry in root.iterfind(f"{{{CI}}}conference-description/{{{CI}}}conf-uris/"
                                   f"{{{CI}}}entry"):
            if _text(entry, "purpose") == "audio-video":
                av_uri = _text(entry, "uri")
        for user in root.iterfind(f"{{{CI}}}users/{{{CI}}}user"):
            entity = user.get("entity", "")
            if not entity:
                raise MalformedDocument("conference-info: a user without an entity")
            if user.get("state") == "deleted":
                users.pop(entity, None)
                continue
            users[entity] = _participant(entity, user, users.get(entity))
            if len(users) > MAX_USERS:
                raise MalformedDocument(f"conference-info: more than {MAX_USERS} users")
        self.version, self.users, self.av_uri = version, users, av_uri
        self.seen_me = self.seen_me or self.me in users
        return True

    def lobby(self) -> Lobby:
        """Where the focus has us: still in the lobby, let in, or sent away."""
        mine = self.users.get(self.me)
        if mine is None:
            return "refused" if self.seen_me else "unknown"
        statuses = {status for _, status in mine.endpoints}
        if statuses & _ADMITTED:
            return "admitted"
        if "pending" in statuses:
            return "lobby"
        if statuses and statuses <= _GONE:
            return "refused"
        return "unknown"


def _participant(entity: str, user: Element, before: Participant | None) -> Participant:
    endpoints = dict(before.endpoints) if before is not None else {}
    for endpoint in user.iterfind(f"{{{CI}}}endpoint"):
        name = endpoint.get("entity", "")
        if endpoint.get("state") == "deleted":
            endpoints.pop(name, None)
        else:
            endpoints[name] = _text(endpoint, "status") or endpoints.get(name, "")
    display = _text(user, "display-text") or (before.display if before else "")
    return Participant(entity, display, tuple(endpoints.items()))


def _text(element: Element, name: str) -> str:
    child = element.find(f"{{{CI}}}{name}")
    return (child.text or "").strip() if child is not None else ""
