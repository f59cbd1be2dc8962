"""`lyncgate dialplan ALIAS`: explain where a call to ALIAS would go and why each earlier rule
missed, and what presence the node publishes for it (a Lync contact list's 'Available' or
'Offline'), which does not depend on the call's context. Exit 0 when routed, 1 when
rejected, 2 on a usage or config error (config.md)."""

from __future__ import annotations

import argparse
import json
import sys

from gateway.conferencing.c3p import is_conference_id
from gateway.config.load import load_for_command
from gateway.config.schema import Config
from gateway.presence.answer import Answer, answer
from routing.engine import CallContext, Decision, Router
from routing.model import PROTOCOLS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("alias", help="the dialled alias, e.g. sip:alice@example.com")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="sip",
                        help="protocol the call arrives with (default: sip)")
    parser.add_argument("--location", help="ingress location (default: the node's location)")
    parser.add_argument("--registered", action="store_true",
                        help="the caller is registered to this node")
    parser.add_argument("--outgoing", action="store_true",
                        help="a call placed from a conference, not an incoming gateway call")
    parser.add_argument("--config", metavar="FILE", help="TOML config (default: embedded)")
    parser.add_argument("--json", action="store_true", help="print the decision as JSON")


def run(args: argparse.Namespace) -> int:
    config = load_for_command(args.config, check_files=False)  # routing needs no TLS files
    if config is None:
        return 2
    location = config.node.location if args.location is None else args.location
    if location and config.location(location) is None:
        print(f"lyncgate dialplan: unknown location {location!r}", file=sys.stderr)
        return 2
    context = CallContext(protocol=args.protocol, location=location,
                          registered=args.registered, outgoing=args.outgoing)
    router = Router(config.services, config.routing_rules)
    decision = router.explain(args.alias, context)
    presence = answer(router, args.alias)
    meeting = describe_meeting(decision, config)
    if args.json:
        print(json.dumps({**decision.to_json(), **meeting,
                          "presence": presence.to_json(config.avatar_base())}, indent=2))
    else:
        print(describe(decision, context))
        if meeting:
            print(f"meeting:  {meeting['meeting']}")
        print(describe_presence(presence, config))
    return 0 if decision.routed else 1


def describe(decision: Decision, context: CallContext) -> str:
    direction = "outgoing from a conference" if context.outgoing else "incoming"
    lines = [f"alias:    {decision.alias}",
             f"call:     {direction}, {context.protocol}, location "
             f"{context.location or '(none)'}, {'' if context.registered else 'not '}registered"]
    for miss in decision.misses:
        lines.append(f"  missed  {miss.rule}: {miss.why}")
    service, rule = decision.service, decision.rule
    if service is not None:
        lines.append(f"service:  {service.name} ({service.type})")
        if service.target:
            lines.append(f"target:   {service.target}")
        if decision.pin is not None:
            lines.append("pin:      given in the alias")
        if decision.conference_id is not None:
            lines.append(f"conference id: {decision.conference_id}")
    elif rule is not None:
        lines += [f"rule:     {rule.name} (priority {rule.priority})",
                  f"destination: {decision.destination}",
                  f"target:   {rule.target} via {rule.call_via}, {rule.outgoing_protocol}, "
                  f"location {decision.outgoing_location or '(automatic)'}"]
    lines.append(f"result:   {decision.outcome}: {decision.reason}")
    return "\n".join(lines)


def describe_meeting(decision: Decision, config: Config) -> dict[str, str | None]:
    """For a rule whose target is a Lync meeting by Conference ID: the ID its rewrite leaves
    and the Lync server that would look it up (the rule's `call_via` when it names one,
    else the outgoing location's, else the node location's: the guide's "Lync / Skype for
    Business server" of the rule). Empty for any other decision."""
    rule = decision.rule
    if rule is None or rule.target != "lync_meeting_direct":
        return {}
    destination = decision.destination or ""
    servers = {s.name for s in config.lync_servers}
    location = config.location(decision.outgoing_location or config.node.location)
    server = rule.call_via if rule.call_via in servers else (
        location.lync_server if location is not None and location.lync_server else None)
    if not is_conference_id(destination):
        said = f"{destination!r} is not a Conference ID: the caller would get 404"
    elif server is None:
        said = (f"Conference ID {destination}, but no Lync server to look it up on (set the "
                "rule's call_via or the location's lync_server)")
    else:
        said = (f"Conference ID {destination}, looked up on Lync server {server!r}; the "
                "caller joins the meeting's audio/video (through its lobby when the meeting "
                "has one), or gets 404 when the server knows no such meeting")
    return {"conference_id": destination if is_conference_id(destination) else None,
            "lookup_server": server, "meeting": said}


def describe_presence(found: Answer, config: Config) -> str:
    shown = found.to_json(config.avatar_base())
    lines = [f"presence: {shown['state']} ({found.availability}): {found.why}"]
    if found.available:
        card = found.name + (f" - {found.description}" if found.description else "")
        lines.append(f"  card:   {card}")
        if shown["avatar"]:
            lines.append(f"  avatar: {shown['avatar']}")
    else:
        lines.append("  a Lync contact list shows this contact Offline, as a mistyped one")
    return "\n".join(lines)
