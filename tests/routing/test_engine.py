"""The routing decision: the guide's worked examples, service forms (PIN, Conference ID),
context filters with their explained misses, and the fast path held to a brute-force
reference on random rule sets."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config.load import parse_text
from gateway.config.schema import Config
from routing.alias import parse_alias
from routing.engine import CallContext, Router
from routing.model import PROTOCOLS, RoutingRule
from tests.routing.conftest import GUIDE

LYNC = CallContext(protocol="mssip", location="London")
SIP = CallContext(protocol="sip", location="London")


def guide_router(config_from: Callable[[str], Config]) -> Router:
    config = config_from(GUIDE)
    return Router(config.services, config.routing_rules)


def test_rule_40_routes_lync_calls_to_sip_unchanged(config_from: Callable[[str], Config]) -> None:
    d = guide_router(config_from).decide("sip:bob@example.com;transport=tls", LYNC)
    assert d.outcome == "rule" and d.rule is not None
    assert d.rule.priority == 40 and d.rule.target == "registered_or_external"
    assert d.destination == "bob@example.com"  # empty replace = the parsed alias unchanged
    assert d.outgoing_location == "London"  # automatic = the ingress location


def test_rule_50_rewrites_to_the_conference_id(config_from: Callable[[str], Config]) -> None:
    d = guide_router(config_from).decide("sip:881234567@example.com", SIP)
    assert d.rule is not None and d.rule.name == "Lync meeting direct"
    assert d.destination == "1234567" and d.rule.target == "lync_meeting_direct"


def test_rule_60_matches_the_full_uri_for_virtual_reception(
    config_from: Callable[[str], Config],
) -> None:
    alias = "sip:carol@example.com;transport=tcp"
    d = guide_router(config_from).decide(alias, CallContext(protocol="h323"))
    assert d.rule is not None and d.rule.priority == 60
    assert d.destination == alias  # a full-URI rule with no replace keeps the whole URI


def test_a_vmr_alias_wins_over_a_rule_that_also_matches(
    config_from: Callable[[str], Config],
) -> None:
    d = guide_router(config_from).decide("sip:Meet.Alice@example.com", LYNC)
    assert d.outcome == "service" and d.service is not None
    assert d.service.name == "Alice's meeting room" and d.rule is None


def test_service_aliases_match_without_domain_and_with_an_ip_host(
    config_from: Callable[[str], Config],
) -> None:
    d = guide_router(config_from).decide("sip:alice.vmr@10.1.2.3:5060", SIP)
    assert d.service is not None and d.service.type == "vmr"


def test_pin_and_conference_id_forms_reach_their_service(
    config_from: Callable[[str], Config],
) -> None:
    router = guide_router(config_from)
    with_pin = router.decide("sip:meet.alice*1234@example.com", SIP)
    assert with_pin.service is not None and with_pin.pin == "1234"
    lobby = router.decide("sip:sfb.lobby**7654321@example.com", SIP)
    assert lobby.service is not None and lobby.service.type == "virtual_reception"
    assert lobby.conference_id == "7654321"
    # a Conference ID means nothing to a VMR: that alias falls through to the rules
    vmr = router.decide("sip:meet.alice**7654321@example.com", LYNC)
    assert vmr.outcome == "rule"


def test_unmatched_alias_is_rejected_with_every_miss_explained(
    config_from: Callable[[str], Config],
) -> None:
    d = guide_router(config_from).explain("sip:dave@other.org", SIP)
    assert d.outcome == "reject" and "dave@other.org" in d.reason
    whys = {m.rule: m.why for m in d.misses}
    assert whys["Route calls from Lync / Skype for Business"].startswith("wrong protocol")
    assert "does not match" in whys["Lync meeting direct"]
    assert "full alias URI" in whys["Route to Lync / Skype for Business clients"]


def rule_text(name: str, priority: int, match: str, **extra: object) -> str:
    lines = [f'name = "{name}"', f"priority = {priority}", f"match = '{match}'",
             'protocols = ["sip", "mssip", "h323", "webrtc"]']
    for key, value in extra.items():
        lines.append(f"{key} = {value!r}".replace("True", "true").replace("False", "false")
                     .replace("'", '"'))
    return "[[routing_rules]]\n" + "\n".join(lines) + "\n"


def test_filters_disabled_direction_location_registration(
    config_from: Callable[[str], Config],
) -> None:
    text = '[[locations]]\nname = "London"\n[[locations]]\nname = "Oslo"\n' + "".join([
        rule_text("a-disabled", 1, ".*", enabled=False),
        rule_text("b-outgoing", 2, ".*", incoming=False, outgoing=True),
        rule_text("c-oslo", 3, ".*", location="Oslo"),
        rule_text("d-registered", 4, ".*", registered_only=True),
        rule_text("e-catch-all", 5, ".*"),
    ])
    config = config_from(text)
    router = Router(config.services, config.routing_rules)
    d = router.explain("sip:x@y.com", SIP)
    assert d.rule is not None and d.rule.name == "e-catch-all"
    assert [m.why.split(":")[0] for m in d.misses] == [
        "disabled", "does not apply to incoming gateway calls", "wrong location",
        "registered devices only",
    ]
    registered = router.decide("sip:x@y.com", CallContext(registered=True))
    assert registered.rule is not None and registered.rule.name == "d-registered"
    outgoing = router.decide("sip:x@y.com", CallContext(outgoing=True))
    assert outgoing.rule is not None and outgoing.rule.name == "b-outgoing"


def test_equal_priorities_are_ordered_by_name_not_file_order(
    config_from: Callable[[str], Config],
) -> None:
    config = config_from(rule_text("zulu", 10, ".*") + rule_text("alpha", 10, ".*"))
    d = Router(config.services, config.routing_rules).decide("1234", SIP)
    assert d.rule is not None and d.rule.name == "alpha"


def test_matching_ignores_case_and_needs_the_whole_alias(
    config_from: Callable[[str], Config],
) -> None:
    config = config_from(rule_text("r", 10, r"bob@example\.com"))
    router = Router(config.services, config.routing_rules)
    assert router.decide("sip:BOB@Example.COM", SIP).outcome == "rule"
    assert router.decide("sip:bob@example.com.evil.org", SIP).outcome == "reject"


def test_is_known_alias_covers_services_and_enabled_rules(
    config_from: Callable[[str], Config],
) -> None:
    router = guide_router(config_from)
    assert router.is_known_alias("sip:alice.vmr@example.com")
    assert router.is_known_alias("sip:anyone@example.com")
    assert not router.is_known_alias("sip:anyone@elsewhere.org")


# -- the fast path against a brute-force reference ------------------------------------------
PATTERNS = [
    r".*", r".*@example\.com", r"alice@example\.com", r"88(\d{5,7})@example\.com",
    r"(\d+)", r"bob", r"(?P<user>[a-z]+)@.*", r".*@example\.com.*", r"1234", r"(a|b)\1.*",
    r"(?i)sip:.*", r"[0-9]{4}@.*", r"carol@vc\.example\.com",
    # shapes the literal-suffix index must not misread
    r"a{2}@x\.org", r".*@(example|other)\.com", r"ab?@example\.com", r"[a@]*\.com",
    r".*@Example\.COM", r"x|.*@example\.com", r"(?x) .*@example\.com", r".*@example\.com$",
    r"sip:.*@example\.com;transport=tls", r".*@example\.comx?", r".*@exa{0,2}mple\.com",
    r".*@e[x]ample\.com", r".*@example(\.com)?",
]
ALIASES = [
    "sip:alice@example.com", "sip:881234567@example.com", "sip:1234@10.0.0.1", "bob",
    "sip:bob@example.com;transport=tls", "sips:aab@x.org", "tel:1234", "h323:carol@vc.example.com",
    "sip:1234@example.com", "Alice <sip:ALICE@EXAMPLE.COM>", "sip:aa@x.org",
    "sip:a@other.com", "sip:ab@example.com", "sip:a@example.com", "x",
]


@st.composite
def rule_sets(draw: st.DrawFn) -> list[dict[str, object]]:
    n = draw(st.integers(1, 12))
    rules = []
    for i in range(n):
        rules.append({
            "name": f"r{draw(st.integers(0, 30))}-{i}",
            "priority": draw(st.integers(1, 5)),
            "match": draw(st.sampled_from(PATTERNS)),
            "enabled": draw(st.booleans()),
            "incoming": draw(st.booleans()),
            "outgoing": draw(st.booleans()),
            "registered_only": draw(st.booleans()),
            "match_full_uri": draw(st.booleans()),
            "protocols": draw(st.lists(st.sampled_from(PROTOCOLS), min_size=1, unique=True)),
        })
    return rules


def brute_force(rules: tuple[RoutingRule, ...], alias: str, ctx: CallContext) -> str | None:
    for rule in sorted(rules, key=lambda r: (r.priority, r.name)):
        if not rule.enabled or rule.location not in ("", ctx.location):
            continue
        if (ctx.outgoing and not rule.outgoing) or (not ctx.outgoing and not rule.incoming):
            continue
        if rule.registered_only and not ctx.registered:
            continue
        if not ctx.outgoing and ctx.protocol not in rule.protocols:
            continue
        subject = alias if rule.match_full_uri else parse_alias(alias)
        match = re.fullmatch(rule.match, subject, re.IGNORECASE)
        if match:
            return f"{rule.name}->{rule.rewrite(match)}"
    return None


@settings(max_examples=300, deadline=None)
@given(
    rules=rule_sets(),
    alias=st.sampled_from(ALIASES),
    ctx=st.builds(CallContext, protocol=st.sampled_from(PROTOCOLS),
                  registered=st.booleans(), outgoing=st.booleans()),
)
def test_decide_and_explain_equal_the_brute_force_reference(
    rules: list[dict[str, object]], alias: str, ctx: CallContext
) -> None:
    names = set()
    text = ""
    for r in rules:
        if r["name"] in names:
            continue
        names.add(r["name"])
        text += "[[routing_rules]]\n" + "".join(
            f"{k} = {_toml(v)}\n" for k, v in r.items()
        )
    router = Router((), parse_text(text, "h.toml", base_dir=None).routing_rules)
    expected = brute_force(router.rules, alias, ctx)
    for decision in (router.decide(alias, ctx), router.explain(alias, ctx)):
        got = None if decision.rule is None else f"{decision.rule.name}->{decision.destination}"
        assert got == expected


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value + "'"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)



@pytest.mark.parametrize("full_uri", [False, True])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_each_pattern_alone_decides_like_the_reference(pattern: str, full_uri: bool) -> None:
    """Exhaustive over the pattern shapes: the literal and domain indexes never hide a rule."""
    text = ("[[routing_rules]]\nname = 'r'\nprotocols = ['sip']\n"
            f"match = '{pattern}'\nmatch_full_uri = {str(full_uri).lower()}\n")
    router = Router((), parse_text(text, "one.toml", base_dir=None).routing_rules)
    for alias in ALIASES:
        decision = router.decide(alias, SIP)
        got = None if decision.rule is None else f"r->{decision.destination}"
        assert got == brute_force(router.rules, alias, SIP), alias
