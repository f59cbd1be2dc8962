"""`[global]` fields lyncgate adds to the contract: session timers and SIP media anchoring,
their defaults and every problem reported with its field path."""

from __future__ import annotations

import pytest

from gateway.config.errors import ConfigError
from gateway.config.load import parse_text


def test_defaults_anchor_media_and_ask_for_lyncs_interval() -> None:
    settings = parse_text("", "t.toml", base_dir=None).global_settings
    assert settings.anchor_sip_media is True
    assert (settings.session_expires_seconds, settings.min_session_expires_seconds) == (1800, 90)


def test_bad_values_are_refused_with_their_field_paths_all_at_once() -> None:
    text = ('[global]\nanchor_sip_media = "yes"\nsession_expires_seconds = 60\n'
            "min_session_expires_seconds = 120\n")
    with pytest.raises(ConfigError) as refused:
        parse_text(text, "t.toml", base_dir=None)
    problems = str(refused.value)
    assert "global.anchor_sip_media: must be true or false" in problems
    assert "global.session_expires_seconds: 60 is below min_session_expires_seconds" in problems
