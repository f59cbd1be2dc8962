"""The presence fields of the config: `avatar` on services and rules (resolved against the
config's folder, checked to be a PNG or JPEG), `description`, and the `[avatar]` listener."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.errors import ConfigError
from gateway.config.load import load_default, parse_text

RULE = """
[[routing_rules]]
name = "rooms"
description = "Video rooms"
priority = 10
protocols = ["sip"]
match = '.+'
"""


def test_avatar_files_are_resolved_and_checked(tmp_path: Path) -> None:
    (tmp_path / "room.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 16)
    (tmp_path / "notes.txt").write_text("not an image")
    config = parse_text(RULE + 'avatar = "room.png"\n', str(tmp_path / "c.toml"),
                        base_dir=tmp_path)
    assert config.routing_rules[0].avatar == str(tmp_path / "room.png")
    assert config.routing_rules[0].description == "Video rooms"
    with pytest.raises(ConfigError) as refused:
        parse_text(RULE + 'avatar = "notes.txt"\n' + RULE.replace('"rooms"', '"b"')
                   + 'avatar = "gone.jpg"\n', "c.toml", base_dir=tmp_path)
    problems = refused.value.problems
    assert any(p.startswith("routing_rules[0].avatar:") and "neither a PNG nor a JPEG" in p
               for p in problems), problems
    assert any(p.startswith("routing_rules[1].avatar: cannot read") for p in problems)
    unchecked = parse_text(RULE + 'avatar = "gone.jpg"\n', "c.toml", base_dir=tmp_path,
                           check_files=False)
    assert unchecked.routing_rules[0].avatar == str(tmp_path / "gone.jpg")


def test_the_avatar_listener_section() -> None:
    plain = parse_text("", "c.toml", base_dir=None)
    assert (plain.avatar.address, plain.avatar.port) == ("127.0.0.1", 80)
    assert plain.avatar_base() == "http://localhost"
    config = parse_text('[node]\nsip_tls_fqdn = "gw.example.com"\n[avatar]\nport = 8081\n',
                        "c.toml", base_dir=None)
    assert config.avatar_base() == "http://gw.example.com:8081"
    public = parse_text('[avatar]\nurl = "https://avatars.example.com/"\n', "c.toml",
                        base_dir=None)
    assert public.avatar_base() == "https://avatars.example.com"
    assert parse_text("[avatar]\nport = 0\n", "c.toml", base_dir=None).avatar_base() == ""
    with pytest.raises(ConfigError) as refused:
        parse_text('[avatar]\naddress = "nowhere"\nurl = "ftp://x"\ncolour = 1\n', "c.toml",
                   base_dir=None)
    assert len(refused.value.problems) == 3, refused.value.problems


def test_the_embedded_default_serves_avatars_on_a_high_loopback_port() -> None:
    config = load_default()
    assert (config.avatar.address, config.avatar.port) == ("127.0.0.1", 8081)


def test_the_presence_caps() -> None:
    plain = parse_text("", "c.toml", base_dir=None).presence
    assert (plain.max_subscriptions, plain.max_subscriptions_per_source) == (50_000, 20_000)
    set_ = parse_text("[presence]\nmax_subscriptions = 10\nmax_subscriptions_per_source = 3\n",
                      "c.toml", base_dir=None).presence
    assert (set_.max_subscriptions, set_.max_subscriptions_per_source) == (10, 3)
    with pytest.raises(ConfigError):
        parse_text("[presence]\nmax_subscriptions = -1\n", "c.toml", base_dir=None)
