"""The routing decision: the guide's worked examples, service forms (PIN, Conference ID),
context filters with their explained misses, and the fast path held to a brute-force
reference on random rule sets."""

from __future__ import annotations

import json
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
    assert d.destination == "sip:bob@example.com;transport=tls"  # empty replace: as dialled
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


def router_of(text: str) -> Router:
    config = parse_text(text, "t.toml", base_dir=None)
    return Router(config.services, config.routing_rules)


@pytest.mark.parametrize(
    ("pattern", "alias", "routed"),
    [
        ("strasse@example\\.com", "sip:stra\u00dfe@example.com", False),  # re: sharp s is not ss
        ("\u00df@x\\.org", "sip:SS@x.org", False),
        ("effort@x\\.org", "sip:e\ufb00ort@x.org", False),  # nor is the ff ligature ff
        (".*@ibm\\.com", "sip:bob@\u0131bm.com", True),  # re: dotless i is i
        ("kelvin", "sip:\u212aelvin@10.0.0.1", True),  # and the Kelvin sign k
        ("\u0130stanbul@x\\.org", "sip:istanbul@x.org", True),
    ],
)
def test_decide_explain_and_presence_agree_on_letters_re_folds_its_own_way(
    pattern: str, alias: str, routed: bool
) -> None:
    """The literal and domain indexes never disagree with the rule's regex (re.IGNORECASE,
    which is neither str.lower nor str.casefold): decide, explain and is_known_alias give
    the regex's answer for any letters, and none of them raises."""
    router = router_of(rule_text("r", 10, pattern))
    assert router.decide(alias, SIP).routed is routed
    assert router.explain(alias, SIP).routed is routed
    assert router.is_known_alias(alias) is routed


@pytest.mark.parametrize(
    ("configured", "dialled"),
    [
        ("sip:meet@example.com", "sip:meet@example.com"),
        ("sip:meet@example.com", "Meet@Example.com"),
        ("sips:meet@example.com:5061", "sip:meet@example.com;transport=tls"),
        ("<sip:meet@example.com;transport=tcp>", "sip:meet@example.com:5060"),
        ("sip:1234@10.0.0.1", "sip:1234@192.0.2.7"),
        ("meet@example.com", "sip:meet@example.com"),
    ],
)
def test_a_service_alias_written_as_a_uri_matches_the_calls_to_it(
    configured: str, dialled: str
) -> None:
    """Service aliases are parsed at load like a dialled alias (scheme, parameters, port and
    IP host dropped), so an alias configured as a URI is matched by decide, explain and
    is_known_alias; the configured text is kept for display."""
    router = router_of(f'[[services]]\nname = "m"\naliases = ["{configured}"]\n'
                       'target = "sip:mcu@mcu.example.com"\n')
    assert router.decide(dialled, SIP).outcome == "service"
    assert router.explain(dialled, SIP).outcome == "service"
    assert router.is_known_alias(dialled)
    assert router.services[0].aliases == (configured,)


def test_an_empty_replace_string_routes_to_the_alias_as_dialled() -> None:
    """The guide: "Leave blank to leave the originally dialed alias unchanged". The
    destination is the URI as it arrived (port, parameters and IP host included), not the
    parsed alias the rule matched, so the call can still be placed."""
    router = router_of(rule_text("any", 10, ".*"))
    for decision in (router.decide("sip:nobody@127.0.0.1:1", SIP),
                     router.explain("sip:nobody@127.0.0.1:1", SIP)):
        assert decision.rule is not None and decision.destination == "sip:nobody@127.0.0.1:1"


def test_a_miss_quotes_the_regex_as_written(config_from: Callable[[str], Config]) -> None:
    """The explainer's reason for a regex miss quotes the pattern as the operator wrote it,
    without repr's doubled backslashes; the JSON then carries only JSON's own escaping."""
    d = guide_router(config_from).explain("sip:dave@other.org", SIP)
    whys = {m.rule: m.why for m in d.misses}
    assert whys["Lync meeting direct"] == (
        r"alias 'dave@other.org' does not match regex '88(\d{5,7})@example\.com'")
    assert r"regex '88(\\d{5,7})@example\\.com'" in json.dumps(d.to_json())


def test_reasons_say_what_was_decided(config_from: Callable[[str], Config]) -> None:
    """Decision.reason (made when read) names the rule, the service and what the alias
    carried, or the parsed alias nothing matched."""
    router = guide_router(config_from)
    assert router.decide("sip:bob@example.com", LYNC).reason == (
        "matched rule 'Route calls from Lync / Skype for Business' (priority 40)")
    assert router.decide("sip:meet.alice*1234@example.com", SIP).reason == (
        "alias of vmr \"Alice's meeting room\" with PIN")
    assert router.decide("sip:sfb.lobby**7654321@example.com", SIP).reason == (
        "alias of virtual_reception 'SfB lobby' with Conference ID")
    rejected = router.decide("sip:dave@other.org;transport=tls", SIP)
    assert rejected.to_json()["reason"] == rejected.reason == (
        "no service alias and no routing rule matches 'dave@other.org'")


def test_no_decision_compiles_a_pattern(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rules' alternations are compiled when the Router is built (a reload builds a new
    one), for every kind of context and domain, so no call pays for compiling one."""
    rules: list[tuple[str, dict[str, object]]] = [
        (r"(\d+)@one\.example", {}), (r"(\w+)@one\.example", {"location": "Oslo"}),
        (r".*@two\.example", {"registered_only": True}), (r"a.*", {"outgoing": True}),
        (r"b|c", {}), (r"sip:.*@one\.example.*", {"match_full_uri": True}), (r"x@y\.org", {}),
    ]
    router = router_of('[[locations]]\nname = "Oslo"\n' + "".join(
        rule_text(f"r{i}", i + 1, match, **extra) for i, (match, extra) in enumerate(rules)))

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("a pattern was compiled during a decision")

    monkeypatch.setattr(re, "compile", refuse)
    contexts = [SIP, LYNC, CallContext("h323", "Oslo", registered=True),
                CallContext("webrtc", "Elsewhere"), CallContext(outgoing=True)]
    for ctx in contexts:
        for alias in ("sip:12@one.example", "sip:ab@two.example", "b", "sip:x@y.org",
                      "sip:stra\u00dfe@one.example", "sip:zz@three.example"):
            router.decide(alias, ctx)
            router.is_known_alias(alias)


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


# Letters whose case re.IGNORECASE, str.lower and str.casefold each see differently: sharp s
# (capital too), dotless i, dotted capital I, the Kelvin sign, the ff ligature, long s.
TRICKY = "iIsSkKfF" + "\u00df\u1e9e\u0131\u0130\u212a\ufb00\u017f"
WORDS = st.lists(st.text(alphabet=TRICKY, min_size=1, max_size=3), min_size=1, max_size=3)


def spellings(letter: str) -> list[str]:
    """Ways a caller may spell `letter`: str's case mappings, and every letter of TRICKY
    that re.IGNORECASE takes for it."""
    same = [c for c in TRICKY if re.fullmatch(re.escape(letter), c, re.IGNORECASE)]
    return sorted({letter, letter.upper(), letter.lower(), letter.casefold(), *same})


@st.composite
def tricky_pattern(draw: st.DrawFn, words: list[str]) -> str:
    user, domain = draw(st.sampled_from(words)), draw(st.sampled_from(words))
    return draw(st.sampled_from([user, f"{user}@{domain}\\.com", f".*@{domain}\\.com",
                                 f"{user}@.*", f"{user}.*"]))


@st.composite
def tricky_alias(draw: st.DrawFn, words: list[str]) -> str:
    user, domain = (
        "".join(draw(st.sampled_from(spellings(c))) for c in draw(st.sampled_from(words)))
        for _ in range(2)
    )
    return draw(st.sampled_from([user, f"sip:{user}@{domain}.com", f"{user}@{domain}.com"]))


@st.composite
def rules_and_alias(draw: st.DrawFn) -> tuple[list[dict[str, object]], str]:
    """Random rules, and an alias; patterns and alias share words, which the alias may
    spell in another case, so the case-folding corners come up often."""
    words = draw(WORDS)
    rules = []
    for i in range(draw(st.integers(1, 12))):
        rules.append({
            "name": f"r{draw(st.integers(0, 30))}-{i}",
            "priority": draw(st.integers(1, 5)),
            "match": draw(st.sampled_from(PATTERNS) | tricky_pattern(words)),
            "enabled": draw(st.booleans()),
            "incoming": draw(st.booleans()),
            "outgoing": draw(st.booleans()),
            "registered_only": draw(st.booleans()),
            "match_full_uri": draw(st.booleans()),
            "protocols": draw(st.lists(st.sampled_from(PROTOCOLS), min_size=1, unique=True)),
        })
    return rules, draw(st.sampled_from(ALIASES) | tricky_alias(words))


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
            return f"{rule.name}->{rule.rewrite(match, alias)}"
    return None


@settings(max_examples=500, deadline=None)
@given(
    case=rules_and_alias(),
    ctx=st.builds(CallContext, protocol=st.sampled_from(PROTOCOLS),
                  registered=st.booleans(), outgoing=st.booleans()),
)
def test_decide_and_explain_equal_the_brute_force_reference(
    case: tuple[list[dict[str, object]], str], ctx: CallContext
) -> None:
    """decide, explain and is_known_alias give the reference's answer (rules sorted, each
    regex tried in turn) for random rule sets, including letters whose case folding differs
    between re and str, so no index may ever hide a rule or claim one that does not match."""
    rules, alias = case
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
    known = any(
        re.fullmatch(r.match, alias if r.match_full_uri else parse_alias(alias), re.IGNORECASE)
        for r in router.rules if r.enabled
    )
    assert router.is_known_alias(alias) == known


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
