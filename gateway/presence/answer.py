"""What presence the node publishes for an alias, and why: the one decision every document
format, `lyncgate dialplan` and the NOTIFY after a reload share.

A service alias or an alias some enabled routing rule would route is Available (the guide:
"a Pexip Distributed Gateway contact publishes an 'Available' presence if the contact alias
matches any Call Routing Rule"); anything else is Offline, so a mistyped contact in a Lync
contact list stands out instead of looking like a good one."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from routing.engine import Router
from routing.model import RoutingRule, Service

# [MS-PRES] availability numbers: 3000-4499 is Available, 18000 and up Offline.
AVAILABLE = 3500
OFFLINE = 18500


@dataclass(frozen=True, slots=True)
class Answer:
    alias: str
    available: bool
    name: str  # the service's or rule's name: the contact card's display name
    description: str
    avatar_path: str  # URL path of the image (`gateway.presence.avatars`), "" for none
    why: str

    @property
    def availability(self) -> int:
        return AVAILABLE if self.available else OFFLINE

    def to_json(self, avatar_base: str) -> dict[str, object]:
        """The `presence` key of `lyncgate dialplan --json` and the API's /dialplan."""
        avatar = f"{avatar_base}{self.avatar_path}" if avatar_base and self.avatar_path else None
        return {"availability": self.availability,
                "state": "Available" if self.available else "Offline",
                "name": self.name or None, "description": self.description or None,
                "avatar": avatar, "why": self.why}


def avatar_path(kind: str, name: str) -> str:
    """Where the avatar server serves the image of the service or rule called `name`."""
    return f"/avatars/{kind}/{quote(name, safe='')}"


def answer(router: Router, alias: str) -> Answer:
    found = router.known(alias)
    if isinstance(found, Service):
        return Answer(alias, True, found.name, found.description,
                      avatar_path("service", found.name),
                      f"service {found.name!r} ({found.type}) answers this alias")
    if isinstance(found, RoutingRule):
        return Answer(alias, True, found.name, found.description,
                      avatar_path("rule", found.name),
                      f"routing rule {found.name!r} matches it (priority {found.priority})")
    return Answer(alias, False, "", "", "",
                  "no service alias and no enabled routing rule matches it")
