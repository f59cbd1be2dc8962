"""Reading `[[services]]` and `[[routing_rules]]` out of the config file into the routing
model (`routing.model`): each field checked, each problem reported with its field path,
each regular expression and replace template compiled once. Routing itself knows nothing of
the config file."""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.config.fields import Section, check_reference, check_unique
from routing.alias import parse_alias
from routing.model import PROTOCOLS, SERVICE_TYPES, TARGETS, RoutingRule, Service

MIN_BANDWIDTH, MAX_BANDWIDTH = 128, 4096
# The guide's PIN rule: 4 to 20 digits.
_PIN = re.compile(r"^[0-9]{4,20}$")


@dataclass(frozen=True, slots=True)
class RoutingReferences:
    """Names other sections define, for cross-reference checks."""

    locations: frozenset[str]
    lync_servers: frozenset[str]
    sip_proxies: frozenset[str]
    turn_servers: frozenset[str]
    stun_servers: frozenset[str]


def parse_routing(
    root: Section, refs: RoutingReferences
) -> tuple[tuple[Service, ...], tuple[RoutingRule, ...]]:
    services = tuple(_service(s, refs) for s in root.tables("services"))
    problems = root.problems
    check_unique(
        ((f"services[{i}].name", s.name) for i, s in enumerate(services)), problems, "service name"
    )
    check_unique(
        (
            (f"services[{i}].aliases[{j}]", alias)
            for i, s in enumerate(services)
            for j, alias in enumerate(s.parsed_aliases)
        ),
        problems,
        "alias",
        fold=True,
    )
    rules = tuple(_rule(s, refs) for s in root.tables("routing_rules"))
    check_unique(
        ((f"routing_rules[{i}].name", r.name) for i, r in enumerate(rules)),
        problems,
        "routing rule name",
    )
    _check_meetings_via_reception(services, rules, root)
    return services, rules


def _check_meetings_via_reception(services: tuple[Service, ...], rules: tuple[RoutingRule, ...],
                                  root: Section) -> None:
    """The guide's Lync meetings via a Virtual Reception: the reception hands on the
    meeting's full conference URI, whose parameters a parsed alias would drop, so the rule
    routing it must match the full URI with a regex ending in `.*` (its troubleshooting
    table: otherwise the call reaches the organiser, or "Conference extension not found")."""
    if not any(s.type == "virtual_reception" and s.lync_server for s in services):
        return
    for i, rule in enumerate(rules):
        if rule.target != "lync_via_virtual_reception" or not rule.enabled:
            continue
        if not rule.match_full_uri:
            root.problems.add(f"routing_rules[{i}].match_full_uri", "a Virtual Reception "
                              "resolves Lync meetings: its lync_via_virtual_reception rule "
                              "must match the full alias URI (match_full_uri = true)")
        if not rule.match.endswith(".*"):
            root.problems.add(f"routing_rules[{i}].match", "a Virtual Reception resolves Lync "
                              "meetings: the regex must end with '.*' to keep the conference "
                              "URI's parameters")


def _service(s: Section, refs: RoutingReferences) -> Service:
    kind = s.choice("type", "vmr", SERVICE_TYPES)
    aliases = s.string_list("aliases")
    if not aliases:
        s.problems.add(f"{s.path}.aliases", "at least one alias is required")
    parsed = tuple(parse_alias(alias) for alias in aliases)
    for i, alias in enumerate(parsed):
        if not alias:
            s.problems.add(f"{s.path}.aliases[{i}]", "nothing is left to match once the "
                           "scheme, parameters, port and IP host are removed")
    service = Service(
        type=kind,
        name=s.string("name", required=True),
        description=s.string("description"),
        aliases=aliases,
        parsed_aliases=parsed,
        pin=s.string("pin"),
        guest_pin=s.string("guest_pin"),
        target=s.string("target"),
        lync_server=s.string("lync_server"),
        lookup_location=s.string("lookup_location"),
        theme=s.string("theme"),
        service_tag=s.string("service_tag"),
        duration_seconds=s.integer("duration_seconds", 30, low=5, high=3600),
        avatar=s.string("avatar", max_len=4096),
    )
    for key in ("pin", "guest_pin"):
        value = getattr(service, key)
        if value and not _PIN.match(value):
            s.problems.add(f"{s.path}.{key}", "must be 4 to 20 digits")
    if service.guest_pin and not service.pin:
        s.problems.add(f"{s.path}.guest_pin", "a guest PIN needs a host PIN")
    if service.pin and service.pin == service.guest_pin:
        s.problems.add(f"{s.path}.guest_pin", "must differ from the host PIN")
    if kind in ("vmr", "auditorium", "scheduled") and not service.target:
        s.problems.add(f"{s.path}.target", f"a {kind} service needs the URI of its media engine")
    check_reference(f"{s.path}.lync_server", service.lync_server, refs.lync_servers,
                    s.problems, "Lync server")
    if service.lync_server and kind != "virtual_reception":
        s.problems.add(f"{s.path}.lync_server", "only a Virtual Reception resolves Conference "
                       "IDs on a Lync server")
    if service.lookup_location and not service.lync_server:
        s.problems.add(f"{s.path}.lookup_location", "a meeting lookup location needs the "
                       "lync_server that resolves the Conference IDs")
    check_reference(f"{s.path}.lookup_location", service.lookup_location, refs.locations,
                    s.problems, "location")
    s.reject_unknown()
    return service


def _rule(s: Section, refs: RoutingReferences) -> RoutingRule:
    problems = s.problems
    path = s.path
    match_text = s.string("match", required=True)
    pattern: re.Pattern[str] | None = None
    try:
        pattern = re.compile(match_text, re.IGNORECASE)
    except re.error as exc:
        where = f" at position {exc.pos}" if exc.pos is not None else ""
        problems.add(f"{path}.match", f"invalid regex: {exc.msg}{where}")
    replace = s.string("replace")
    template = () if pattern is None else _template(f"{path}.replace", replace, pattern, s)
    protocols = s.string_list("protocols")
    for i, proto in enumerate(protocols):
        if proto not in PROTOCOLS:
            problems.add(
                f"{path}.protocols[{i}]", f"{proto!r} is not one of {', '.join(PROTOCOLS)}"
            )
    inbound, outbound = _bandwidth(s)
    call_via = s.string("call_via", "dns")
    if call_via != "dns" and call_via not in refs.sip_proxies | refs.lync_servers:
        problems.add(f"{path}.call_via", f"unknown SIP proxy or Lync server {call_via!r}")
    rule_location = s.string("location")
    outgoing_location = s.string("outgoing_location")
    turn = s.string("turn_server")
    stun = s.string("stun_server")
    check_reference(f"{path}.location", rule_location, refs.locations, problems, "location")
    check_reference(f"{path}.outgoing_location", outgoing_location, refs.locations, problems,
                    "location")
    check_reference(f"{path}.turn_server", turn, refs.turn_servers, problems, "TURN server")
    check_reference(f"{path}.stun_server", stun, refs.stun_servers, problems, "STUN server")
    rule = RoutingRule(
        name=s.string("name", required=True),
        description=s.string("description"),
        priority=s.integer("priority", 100, low=1, high=200),
        enabled=s.boolean("enabled", True),
        incoming=s.boolean("incoming", True),
        outgoing=s.boolean("outgoing", False),
        location=rule_location,
        registered_only=s.boolean("registered_only", False),
        protocols=frozenset(p for p in PROTOCOLS if p in protocols),
        match_full_uri=s.boolean("match_full_uri", False),
        match=match_text,
        pattern=pattern or re.compile(r"(?!)"),
        replace=replace,
        template=template,
        target=s.choice("target", "registered_or_external", TARGETS),
        outgoing_location=outgoing_location,
        outgoing_protocol=s.choice(
            "outgoing_protocol", "sip", ("sip", "mssip", "h323", "webrtc-not-allowed")
        ),
        call_via=call_via,
        turn_server=turn,
        stun_server=stun,
        max_inbound_bandwidth_kbps=inbound,
        max_outbound_bandwidth_kbps=outbound,
        call_capability=s.choice(
            "call_capability",
            "main_video_presentation",
            ("audio_only", "main_video", "main_video_presentation"),
        ),
        theme=s.string("theme"),
        service_tag=s.string("service_tag"),
        avatar=s.string("avatar", max_len=4096),
        # Under placement's 181 s set-up limit, so the caller is told why rather than
        # "no answer" (a lyncgate extension: the guide leaves the lobby's time to Lync).
        lobby_timeout_seconds=s.integer("lobby_timeout_seconds", 150, low=10, high=170),
    )
    if not rule.protocols and rule.incoming:
        problems.add(f"{path}.protocols", "an incoming rule must match at least one protocol")
    if rule.target in ("lync_meeting_direct", "lync_via_virtual_reception") and (
        rule.outgoing_protocol != "mssip"
    ):
        problems.add(f"{path}.outgoing_protocol", f"target {rule.target} places MS-SIP calls: "
                     "set outgoing_protocol = \"mssip\"")
    if rule.target == "lync_meeting_direct":
        # The guide: "the destination alias must be transformed into just a ... Conference
        # ID", and the look-up is the Lync server's, never a SIP proxy's.
        if not rule.replace:
            problems.add(f"{path}.replace", "target lync_meeting_direct needs the alias "
                         "rewritten to just the Conference ID, e.g. match = "
                         "'88(\\d{5,7})@example\\.com' with replace = '\\1'")
        if call_via in refs.sip_proxies:
            problems.add(f"{path}.call_via", "target lync_meeting_direct looks the Conference "
                         f"ID up on a Lync server; {call_via!r} is a SIP proxy")
    s.reject_unknown()
    return rule


def _bandwidth(s: Section) -> tuple[int, int]:
    """`max_bandwidth_kbps` (config.md) sets both directions; the guide's separate inbound and
    outbound limits override it. 0 means no limit; otherwise 128..4096."""
    both = _kbps(s, "max_bandwidth_kbps", 0)
    return (
        _kbps(s, "max_inbound_bandwidth_kbps", both),
        _kbps(s, "max_outbound_bandwidth_kbps", both),
    )


def _kbps(s: Section, key: str, default: int) -> int:
    value = s.integer(key, default, low=0, high=MAX_BANDWIDTH)
    if 0 < value < MIN_BANDWIDTH:
        s.problems.add(
            f"{s.path}.{key}",
            f"{value} is out of range {MIN_BANDWIDTH}..{MAX_BANDWIDTH} (0 = no limit)",
        )
        return default
    return value


def _template(
    path: str, replace: str, pattern: re.Pattern[str], s: Section
) -> tuple[str | int, ...]:
    """`replace` as literal text and group numbers, checked by re's own template compiler.
    `Match.expand` parses its template anew on every call (3 us); this is the same parse,
    done once: the template is expanded against a probe match, with the pattern's group
    numbers and names, whose group k holds k between two markers."""
    try:
        pattern.sub(replace, "")  # compiles the template even though nothing matches
    except re.error as exc:
        where = f" at position {exc.pos}" if exc.pos is not None else ""
        s.problems.add(path, f"invalid replace string: {exc.msg}{where}")
        return ()
    except IndexError as exc:  # how re refuses an unknown group name
        s.problems.add(path, f"invalid replace string: {exc}")
        return ()
    mark = next(chr(c) for c in range(0xE000, 0x110000) if chr(c) not in replace)
    names = {number: name for name, number in pattern.groupindex.items()}
    groups = "".join(
        (f"(?P<{names[k]}>" if k in names else "(") + f"{mark}{k}{mark})"
        for k in range(1, pattern.groups + 1)
    )
    probe = re.compile(f"{mark}0{mark}(?={groups})")
    subject = "".join(f"{mark}{k}{mark}" for k in range(pattern.groups + 1))
    match = probe.match(subject)
    assert match is not None  # the probe is built to match its subject
    # the split alternates text and group numbers: 'a\1b' gives ['a', '1', 'b']
    parts = match.expand(replace).split(mark)
    return tuple(int(part) if i % 2 else part for i, part in enumerate(parts) if i % 2 or part)
