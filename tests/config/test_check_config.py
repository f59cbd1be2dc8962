"""`lyncgate check-config` as an operator runs it: the exit codes every command shares
(README "Exit codes"), counts in words, and fields lyncgate does not support refused."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.cli.console import lyncgate
from tests.daemon.harness import ROOT

RULE = """
[[routing_rules]]
name = "out"
priority = 10
protocols = ["sip"]
match = '.*'
outgoing_protocol = "{protocol}"
"""


def test_an_invalid_file_is_exit_2_for_check_config_and_for_run(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[listen]\nudp = "many"\n')
    checked = lyncgate("check-config", str(path))
    started = lyncgate("run", "--config", str(path), timeout=30)
    assert (checked.returncode, started.returncode) == (2, 2), checked.stderr + started.stderr
    assert f"{path}: listen.udp:" in checked.stderr and f"{path}: listen.udp:" in started.stderr
    assert f"{path}: 1 problem; not valid" in checked.stderr


def test_counts_are_in_words(tmp_path: Path) -> None:
    path = tmp_path / "one.toml"
    path.write_text('[[locations]]\nname = "Oslo"\n[[services]]\ntype = "vmr"\nname = "room"\n'
                    'aliases = ["room@example.com"]\ntarget = "sip:room@mcu.example.com"\n'
                    + RULE.format(protocol="sip"))
    done = lyncgate("check-config", str(path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{path}: valid (1 service, 1 routing rule, 1 location)"


@pytest.mark.parametrize("protocol", ["h323", "webrtc", "webrtc-not-allowed"])
def test_outgoing_protocols_lyncgate_cannot_place_are_refused(
    tmp_path: Path, protocol: str,
) -> None:
    """Accepted before and placed as SIP: now refused, once, with the reason."""
    path = tmp_path / "rules.toml"
    path.write_text(RULE.format(protocol=protocol))
    done = lyncgate("check-config", str(path))
    assert done.returncode == 2, done.stdout
    problems = [line for line in done.stderr.splitlines() if "].outgoing_protocol" in line]
    assert problems == [f"{path}: routing_rules[0].outgoing_protocol: {protocol!r} is not "
                        "supported by lyncgate: it places calls as \"sip\" or \"mssip\" only"]


def test_the_example_error_in_config_md_is_the_real_one(tmp_path: Path) -> None:
    """docs/config.md shows a check-config run on a fourth rule with a broken regex: the same
    file gets the same words."""
    docs = (ROOT / "docs" / "config.md").read_text()
    match = re.search(r"a fourth\s+rule with `match = '([^']*)'`.*?```\n(.*?)```", docs,
                      re.DOTALL)
    assert match is not None, "the example is gone from docs/config.md"
    pattern, shown = match.groups()
    rules = "".join(RULE.format(protocol="sip").replace('"out"', f'"r{i}"') for i in range(3))
    bad = RULE.format(protocol="sip").replace('"out"', '"r3"').replace("'.*'", f"'{pattern}'")
    (tmp_path / "lyncgate.toml").write_text(rules + bad)
    done = lyncgate("check-config", "lyncgate.toml", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == shown
