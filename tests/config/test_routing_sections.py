"""The guide's Lync meeting call targets as check-config reads them: a direct Conference ID
rule must rewrite the alias to the ID and look it up on a Lync server, not a SIP proxy; a
Virtual Reception that resolves meetings needs its rule to match the full URI with a
trailing '.*'; a lookup location needs a Lync server, which only a reception has. The
guide's own rule 50 (with '\\d' written as the form shows it) is valid."""

from __future__ import annotations

import pytest

from gateway.config.errors import ConfigError
from gateway.config.load import parse_text

SERVERS = """
[[lync_servers]]
name = "eu-lyncpool"
address = "fepool.example.com"
[[sip_proxies]]
name = "proxy"
address = "proxy.example.com"
[[locations]]
name = "London"
"""
RULE_50 = """
[[routing_rules]]
name = "Route calls to Lync meeting"
priority = 50
protocols = ["sip", "h323", "webrtc"]
match = '88(\\d{{5,7}})@example\\.com'
replace = '{replace}'
target = "lync_meeting_direct"
outgoing_protocol = "mssip"
call_via = "{via}"
"""
RECEPTION = """
[[services]]
type = "virtual_reception"
name = "Lync IVR gateway"
aliases = ["sfb.lobby@example.com"]
lync_server = "{server}"
lookup_location = "{location}"
"""
RULE_60 = """
[[routing_rules]]
name = "Route to Lync clients"
priority = 60
protocols = ["sip"]
match = '{match}'
match_full_uri = {full}
target = "lync_via_virtual_reception"
outgoing_protocol = "mssip"
"""


def _problems(text: str) -> list[str]:
    try:
        parse_text(SERVERS + text, "t.toml", base_dir=None, check_files=False)
    except ConfigError as exc:
        return exc.problems
    return []


def test_the_guides_rule_50_and_reception_setup_are_valid() -> None:
    assert _problems(RULE_50.format(replace="\\1", via="eu-lyncpool")
                     + RECEPTION.format(server="eu-lyncpool", location="London")
                     + RULE_60.format(match=".*@example\\.com.*", full="true")) == []


def test_a_direct_rule_that_does_not_rewrite_to_the_id_is_refused() -> None:
    assert _problems(RULE_50.format(replace="", via="dns")) == [
        "routing_rules[0].replace: target lync_meeting_direct needs the alias "
        "rewritten to just the Conference ID, e.g. match = '88(\\d{5,7})@example\\.com' "
        "with replace = '\\1'"]


def test_a_direct_rule_through_a_sip_proxy_is_refused() -> None:
    assert _problems(RULE_50.format(replace="\\1", via="proxy")) == [
        "routing_rules[0].call_via: target lync_meeting_direct looks the Conference "
        "ID up on a Lync server; 'proxy' is a SIP proxy"]


@pytest.mark.parametrize(("match", "full", "fields"), [
    (".*@example\\.com", "true", ["match"]),
    (".*@example\\.com.*", "false", ["match_full_uri"]),
    (".*@example\\.com", "false", ["match_full_uri", "match"]),
])
def test_reception_meetings_need_the_full_uri_and_a_trailing_dot_star(
        match: str, full: str, fields: list[str]) -> None:
    found = _problems(RECEPTION.format(server="eu-lyncpool", location="")
                      + RULE_60.format(match=match, full=full))
    assert [line.split(": ")[0] for line in found] == [f"routing_rules[0].{f}" for f in fields]


def test_without_a_meeting_reception_rule_60_may_match_parsed_aliases() -> None:
    """Point-to-point calls to Lync clients alone: the guide's rule 60 before it is adapted."""
    assert _problems(RULE_60.format(match=".*@example\\.com", full="false")) == []


def test_lookup_location_needs_a_lync_server_and_only_receptions_have_one() -> None:
    assert _problems(RECEPTION.format(server="", location="London")) == [
        "services[0].lookup_location: a meeting lookup location needs the "
        "lync_server that resolves the Conference IDs"]
    vmr = ('[[services]]\ntype = "vmr"\nname = "room"\naliases = ["room@example.com"]\n'
           'target = "sip:room@mcu.example.com"\nlync_server = "eu-lyncpool"\n')
    assert _problems(vmr) == ["services[0].lync_server: only a Virtual Reception "
                              "resolves Conference IDs on a Lync server"]


@pytest.mark.parametrize(("seconds", "problems"), [
    (10, []), (170, []),
    (9, ["routing_rules[0].lobby_timeout_seconds: 9 is out of range 10..170"]),
    (171, ["routing_rules[0].lobby_timeout_seconds: 171 is out of range 10..170"]),
])
def test_the_lobby_timeout_is_bounded_below_the_set_up_limit(seconds: int,
                                                              problems: list[str]) -> None:
    """lobby_timeout_seconds (a lyncgate extension, default 150) stays under placement's
    181 s set-up limit, so a caller left in the lobby is told why."""
    rule = RULE_50.format(replace="\\1", via="eu-lyncpool") + f"lobby_timeout_seconds = {seconds}\n"
    assert _problems(rule) == problems
