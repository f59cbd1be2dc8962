"""Services and Call Routing Rules (`[[services]]`, `[[routing_rules]]`) as the routing
engine reads them. Field names follow config.md and the reference guide's "Add Call Routing
Rule" form; `gateway.config.routing_sections` reads them from the config file, reporting
each problem with its field path and compiling each regular expression once."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Protocol = Literal["webrtc", "sip", "mssip", "h323"]
PROTOCOLS: tuple[Protocol, ...] = ("webrtc", "sip", "mssip", "h323")
ServiceType = Literal["vmr", "auditorium", "virtual_reception", "scheduled", "test_call"]
SERVICE_TYPES: tuple[ServiceType, ...] = (
    "vmr",
    "auditorium",
    "virtual_reception",
    "scheduled",
    "test_call",
)
Target = Literal[
    "registered_or_external",
    "registered_only",
    "lync_meeting_direct",
    "lync_via_virtual_reception",
]
TARGETS: tuple[Target, ...] = (
    "registered_or_external",
    "registered_only",
    "lync_meeting_direct",
    "lync_via_virtual_reception",
)
OutgoingProtocol = Literal["sip", "mssip", "h323", "webrtc-not-allowed"]
Capability = Literal["audio_only", "main_video", "main_video_presentation"]


@dataclass(frozen=True, slots=True)
class Service:
    type: ServiceType
    name: str
    description: str
    aliases: tuple[str, ...]  # as configured, for display
    parsed_aliases: tuple[str, ...]  # as parse_alias reads them: what calls are matched on
    pin: str
    guest_pin: str
    target: str  # where the conferencing media engine takes the call
    lync_server: str  # virtual_reception: server that resolves Conference IDs
    lookup_location: str
    theme: str
    service_tag: str
    duration_seconds: int = 30  # test_call: how long the node loops the caller's media back
    # Presence: the contact list's image, a PNG or JPEG file ("" = the node's default image)
    avatar: str = ""

    @property
    def answered_here(self) -> bool:
        """The node answers it itself: a Virtual Reception, or a Test Call Service with no
        media engine."""
        return self.type == "virtual_reception" or (self.type == "test_call" and
                                                    not self.target)


@dataclass(frozen=True, slots=True)
class RoutingRule:
    name: str
    description: str
    priority: int
    enabled: bool
    incoming: bool
    outgoing: bool
    location: str
    registered_only: bool
    protocols: frozenset[Protocol]
    match_full_uri: bool
    match: str
    pattern: re.Pattern[str]
    replace: str
    # `replace` split once into literal text and group numbers (see _template)
    template: tuple[str | int, ...]
    target: Target
    outgoing_location: str
    outgoing_protocol: OutgoingProtocol
    call_via: str
    turn_server: str
    stun_server: str
    max_inbound_bandwidth_kbps: int  # 0 = no limit
    max_outbound_bandwidth_kbps: int
    call_capability: Capability
    theme: str
    service_tag: str
    # Presence: the contact list's image, a PNG or JPEG file ("" = the node's default image)
    avatar: str = ""
    # A Lync meeting's lobby (targets lync_meeting_direct, lync_via_virtual_reception): how
    # long the organiser has to let the caller in
    lobby_timeout_seconds: int = 150

    def sort_key(self) -> tuple[int, str]:
        """Ascending priority; ties by name, so decisions do not depend on file order."""
        return (self.priority, self.name)

    def rewrite(self, match: re.Match[str], dialled: str) -> str:
        """The destination alias: the replace string with the match's groups. An empty one
        leaves the alias as dialled, the whole URI (the guide: "Leave blank to leave the
        originally dialed alias unchanged"), whatever the rule matched against."""
        if not self.replace:
            return dialled
        return "".join([part if isinstance(part, str) else match.group(part) or ""
                        for part in self.template])
