"""Validation of `[[services]]` and `[[routing_rules]]`: every problem reported at once with its
field path, the guide's limits, cross-references, and no crash on any TOML value."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config.errors import ConfigError
from gateway.config.load import parse_data
from gateway.config.schema import Config
from routing.alias import parse_alias
from tests.routing.conftest import GUIDE


def problems_of(config_from: Callable[[str], Config], text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        config_from(text)
    return caught.value.problems


def test_the_guide_example_is_valid(config_from: Callable[[str], Config]) -> None:
    config = config_from(GUIDE)
    assert [r.priority for r in config.routing_rules] == [40, 50, 60]
    assert config.routing_rules[1].pattern.fullmatch("881234567@EXAMPLE.com")  # compiled, /i


def test_every_rule_problem_is_reported_with_its_path(
    config_from: Callable[[str], Config],
) -> None:
    text = """
[[routing_rules]]
name = "ok"
match = ".*"
protocols = ["sip"]

[[routing_rules]]
name = "%s"
priority = 201
match = "(unbalanced"
protocols = ["sip", "carrier-pigeon"]
target = "somewhere"
call_via = "nowhere"
location = "Atlantis"
turn_server = "turn-x"
max_bandwidth_kbps = 100
bogus = 1
""" % ("n" * 251)
    problems = problems_of(config_from, text)
    expected = [
        "routing_rules[1].name:", "routing_rules[1].priority:", "routing_rules[1].match: invalid "
        "regex", "routing_rules[1].protocols[1]:", "routing_rules[1].target:",
        "routing_rules[1].call_via:", "routing_rules[1].location:",
        "routing_rules[1].turn_server:", "routing_rules[1].max_bandwidth_kbps:",
        "routing_rules[1].bogus:",
    ]
    for prefix in expected:
        assert any(p.startswith(prefix) for p in problems), (prefix, problems)
    assert not any(p.startswith("routing_rules[0]") for p in problems)


def test_regex_error_names_the_position(config_from: Callable[[str], Config]) -> None:
    problems = problems_of(config_from, '[[routing_rules]]\nname="r"\nmatch="ab(c"\n'
                           'protocols=["sip"]\n')
    assert problems == ["routing_rules[0].match: invalid regex: missing ), unterminated "
                        "subpattern at position 2"]


def test_replace_back_reference_must_exist(config_from: Callable[[str], Config]) -> None:
    problems = problems_of(config_from, '[[routing_rules]]\nname="r"\nmatch="(a)b"\n'
                           'replace="\\\\2"\nprotocols=["sip"]\n')
    assert problems == ["routing_rules[0].replace: invalid replace string: invalid group "
                        "reference 2 at position 1"]


@pytest.mark.parametrize(
    ("replace", "why"),
    [
        (r"\q", "bad escape \\q at position 0"),
        ("abc\\", "bad escape (end of pattern) at position 3"),
        (r"\g<1", "missing >, unterminated name at position 3"),
        (r"\g<5>", "invalid group reference 5 at position 3"),
        (r"\g<who>", "unknown group name 'who'"),
    ],
)
def test_a_replace_string_re_cannot_expand_is_refused_at_load(
    config_from: Callable[[str], Config], replace: str, why: str
) -> None:
    """re's own template compiler checks the replace string at load (escapes, group names
    and numbers against the rule's pattern), so no rule is loaded that would raise re.error
    at every call it matches; the problem carries its field path."""
    text = (f"[[routing_rules]]\nname = 'r'\nmatch = '(.*)@example\\.com'\n"
            f"replace = '{replace}'\nprotocols = ['sip']\n")
    assert problems_of(config_from, text) == [
        f"routing_rules[0].replace: invalid replace string: {why}"]


TEMPLATE_PIECES = [r"\1", r"\2", r"\3", r"\g<1>", r"\g<user>", r"\g<0>", r"\\", r"\n", r"\0",
                   r"\101", r"\.", "x", "@", "\u00e9", "\ue000", "\ue001"]


@settings(max_examples=200, deadline=None)
@given(
    replace=st.lists(st.sampled_from(TEMPLATE_PIECES), min_size=1, max_size=8).map("".join),
    alias=st.sampled_from(["sip:bob@xample.org", "bob@example.org", "@x", "sip:a\ue000@b"]),
)
def test_a_replace_string_expands_as_re_expands_it(replace: str, alias: str) -> None:
    """The replace string, split into text and group numbers once at load, gives what
    Match.expand gives: escapes, numbered and named groups, the whole match, unmatched
    groups as '', and text that looks like the split's own markers."""
    match = r"(?P<user>[^@]*)@(x)?(.*)"
    text = (f"[[routing_rules]]\nname = 'r'\nmatch = '{match}'\nreplace = '{replace}'\n"
            "protocols = ['sip']\n")
    rule = parse_data(tomllib.loads(text), "t.toml", base_dir=None).routing_rules[0]
    found = re.fullmatch(match, parse_alias(alias), re.IGNORECASE)
    assert found is not None
    assert rule.rewrite(found, alias) == found.expand(replace)


def test_service_aliases_are_compared_as_calls_parse_them(
    config_from: Callable[[str], Config],
) -> None:
    """A service alias is parsed at load the way calls are, so `sip:x@y` duplicates `x@y`
    and an alias that parses to nothing cannot be configured."""
    text = """
[[services]]
name = "a"
aliases = ["meet@example.com", "sip:"]
target = "sip:mcu@example.com"

[[services]]
name = "b"
aliases = ["sip:Meet@example.com:5061;transport=tls"]
target = "sip:mcu@example.com"
"""
    problems = problems_of(config_from, text)
    assert problems == [
        "services[0].aliases[1]: nothing is left to match once the scheme, parameters, port "
        "and IP host are removed",
        "services[1].aliases[0]: duplicate alias 'Meet@example.com' (first at "
        "services[0].aliases[0])",
    ]


@pytest.mark.parametrize(("value", "ok"), [(0, True), (128, True), (4096, True), (127, False),
                                           (4097, False), (-1, False)])
def test_bandwidth_range(config_from: Callable[[str], Config], value: int, ok: bool) -> None:
    text = ('[[routing_rules]]\nname="r"\nmatch=".*"\nprotocols=["sip"]\n'
            f"max_bandwidth_kbps={value}\n")
    if ok:
        rule = config_from(text).routing_rules[0]
        assert rule.max_inbound_bandwidth_kbps == rule.max_outbound_bandwidth_kbps == value
    else:
        assert problems_of(config_from, text)[0].startswith("routing_rules[0].max_bandwidth")


def test_service_problems(config_from: Callable[[str], Config]) -> None:
    text = """
[[services]]
name = "A"
aliases = ["room@example.com"]
pin = "12"
target = "sip:mcu@example.com"

[[services]]
name = "a2"
aliases = ["ROOM@example.com"]
guest_pin = "5555"

[[services]]
type = "virtual_reception"
name = "lobby"
aliases = []
lync_server = "missing"
"""
    problems = problems_of(config_from, text)
    for prefix in ("services[0].pin: must be 4 to 20 digits", "services[1].guest_pin:",
                   "services[1].target:", "services[1].aliases[0]:", "services[2].aliases:",
                   "services[2].lync_server:"):
        assert any(p.startswith(prefix) for p in problems), (prefix, problems)


TOML_VALUES = st.recursive(
    st.none().map(lambda _: "") | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=8)
    | st.floats(allow_nan=False),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5),
                                                                      children, max_size=3),
    max_leaves=6,
)
RULE_KEYS = ["name", "priority", "match", "replace", "protocols", "target", "enabled",
             "location", "call_via", "max_bandwidth_kbps", "outgoing_protocol", "aliases",
             "pin", "type", "match_full_uri"]


@settings(max_examples=300, deadline=None)
@given(
    rules=st.lists(st.dictionaries(st.sampled_from(RULE_KEYS), TOML_VALUES, max_size=6),
                   max_size=3),
    services=st.lists(st.dictionaries(st.sampled_from(RULE_KEYS), TOML_VALUES, max_size=6),
                      max_size=3),
    top=TOML_VALUES,
)
def test_validation_never_crashes_on_random_values(
    rules: list[dict[str, Any]], services: list[dict[str, Any]], top: Any
) -> None:
    for raw in ({"routing_rules": rules, "services": services}, {"routing_rules": top},
                {"services": top}):
        try:
            parse_data(raw, "random.toml", base_dir=None)
        except ConfigError as exc:
            assert exc.problems and all(": " in p for p in exc.problems)
