"""`lyncgate dialplan`: the JSON contract of config.md and its exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli import main
from tests.routing.conftest import GUIDE

CONTRACT_KEYS = {"alias", "outcome", "service", "rule", "destination", "target", "reason",
                 "misses"}


@pytest.fixture
def guide_file(tmp_path: Path) -> str:
    path = tmp_path / "lyncgate.toml"
    path.write_text(GUIDE)
    return str(path)


def test_routed_alias_prints_the_contract_and_exits_0(
    guide_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["dialplan", "sip:881234567@example.com", "--protocol", "sip",
                 "--config", guide_file, "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out.keys() >= CONTRACT_KEYS
    assert out["outcome"] == "rule" and out["rule"] == "Lync meeting direct"
    assert out["destination"] == "1234567" and out["target"] == "lync_meeting_direct"
    assert out["misses"] == [{"rule": "Route calls from Lync / Skype for Business",
                              "why": "wrong protocol: rule matches mssip, call is sip"}]


def test_rejected_alias_exits_1_and_explains_in_words(
    guide_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["dialplan", "sip:nobody@elsewhere.org", "--config", guide_file])
    text = capsys.readouterr().out
    assert code == 1
    assert "missed  Lync meeting direct: alias 'nobody@elsewhere.org' does not match" in text
    assert "result:   reject" in text


def test_service_alias(guide_file: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["dialplan", "meet.alice*1234@example.com", "--config", guide_file, "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["outcome"] == "service"
    assert out["service"] == "Alice's meeting room" and out["rule"] is None


def test_config_and_usage_errors_exit_2(
    tmp_path: Path, guide_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[routing_rules]]\nname = "r"\nmatch = "("\nprotocols = ["sip"]\n')
    assert main(["dialplan", "x", "--config", str(bad)]) == 2
    assert "routing_rules[0].match: invalid regex" in capsys.readouterr().err
    assert main(["dialplan", "x", "--config", guide_file, "--location", "Nowhere"]) == 2
    with pytest.raises(SystemExit) as exited:
        main(["dialplan", "x", "--protocol", "fax"])
    assert exited.value.code == 2


def test_a_conference_id_route_names_the_id_and_the_lookup_server(
    guide_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The guide's rule 50: the rewrite leaves the Conference ID, looked up on the rule's
    Lync server; the words say the caller joins the meeting, or gets 404."""
    assert main(["dialplan", "sip:88572450@example.com", "--config", guide_file, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["conference_id"], out["lookup_server"]) == ("572450", "eu-lyncpool")
    assert main(["dialplan", "sip:88572450@example.com", "--config", guide_file]) == 0
    assert ("meeting:  Conference ID 572450, looked up on Lync server 'eu-lyncpool'; the "
            "caller joins the meeting's audio/video" in capsys.readouterr().out)


def test_a_rewrite_that_is_no_conference_id_is_said_to_404(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "r.toml"
    path.write_text(GUIDE.replace("replace = '\\1'", "replace = 'room-\\1'"))
    main(["dialplan", "sip:88572450@example.com", "--config", str(path), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["conference_id"] is None and out["lookup_server"] == "eu-lyncpool"
    assert out["meeting"] == "'room-572450' is not a Conference ID: the caller would get 404"
