"""`lyncgate dialplan ALIAS` says what presence the alias would publish, and why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli import main
from tests.kit.presence import CONFIG


@pytest.fixture
def config_file(tmp_path: Path) -> str:
    path = tmp_path / "lyncgate.toml"
    path.write_text('[node]\nsip_tls_fqdn = "gw.example.com"\n[avatar]\nport = 8081\n'
                    + CONFIG)
    return str(path)


def test_a_routed_alias_is_available_with_its_card_and_avatar(
        config_file: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dialplan", "sip:paris-room042@vc.example.com", "--config", config_file]) == 0
    text = capsys.readouterr().out
    assert "presence: Available (3500): routing rule 'rooms' matches it (priority 10)" in text
    assert "  card:   rooms - Video rooms by city" in text
    assert "  avatar: http://gw.example.com:8081/avatars/rule/rooms" in text


def test_a_mistyped_alias_is_offline_and_says_so(
        config_file: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dialplan", "paris-rooom042@vc.example.com", "--config", config_file,
                 "--json"]) == 1
    presence = json.loads(capsys.readouterr().out)["presence"]
    assert presence == {"availability": 18500, "state": "Offline", "name": None,
                        "description": None, "avatar": None,
                        "why": "no service alias and no enabled routing rule matches it"}


def test_presence_does_not_depend_on_the_call_context(
        config_file: str, capsys: pytest.CaptureFixture[str]) -> None:
    # The rule takes sip and mssip calls only; a subscriber is not a call, so the alias
    # is Available whatever --protocol says, as the guide's "matches any rule" puts it.
    assert main(["dialplan", "sip:paris-room042@vc.example.com", "--protocol", "h323",
                 "--config", config_file, "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["outcome"] == "reject" and out["presence"]["state"] == "Available"
