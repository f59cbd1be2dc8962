"""The systemd unit and what installs the path it runs: the unit, scripts/install and the docs
name the same binary and the same config file."""

from __future__ import annotations

import re
import subprocess

from tests.daemon.harness import ROOT

UNIT = ROOT / "gateway" / "daemon" / "lyncgate.service"
INSTALL = ROOT / "scripts" / "install"


def directives(name: str) -> list[str]:
    return [line.split("=", 1)[1] for line in UNIT.read_text().splitlines()
            if line.startswith(f"{name}=")]


def test_the_unit_runs_the_path_install_link_makes() -> None:
    commands = directives("ExecStartPre") + directives("ExecStart")
    binaries = {command.split()[0] for command in commands}
    assert binaries == {"/usr/local/bin/lyncgate"}
    script = INSTALL.read_text()
    assert re.search(r"^  target=/usr/local/bin/lyncgate$", script, re.MULTILINE)
    assert 'ln -sfn "$PWD/.venv/bin/lyncgate" "$target"' in script
    for doc in ("README.md", "docs/operations.md"):
        text = " ".join((ROOT / doc).read_text().split())
        assert "scripts/install --link" in text and "/usr/local/bin/lyncgate" in text, doc


def test_install_refuses_an_option_it_does_not_know_before_doing_anything() -> None:
    """Before, any argument but --test was ignored and the install ran anyway: a mistyped
    --link would install without the link the unit needs."""
    done = subprocess.run([str(INSTALL), "--lnik"], capture_output=True, text=True, timeout=30,
                          check=False)
    assert done.returncode == 2
    assert done.stderr == "scripts/install: unknown option '--lnik' (options: --test, --link)\n"


def test_the_docs_and_the_unit_name_one_config_path() -> None:
    configs = {command.split("--config")[-1].split()[0] if "--config" in command
               else command.split()[-1]
               for command in directives("ExecStartPre") + directives("ExecStart")}
    assert configs == {"/etc/lyncgate/lyncgate.toml"}
    named = set(re.findall(r"/etc/\S*\.toml", (ROOT / "docs" / "operations.md").read_text()))
    assert named == configs


def test_the_unit_does_not_call_5060_privileged() -> None:
    """Privileged ports are those below 1024; the capability is for a config that uses one."""
    text = UNIT.read_text()
    assert not re.search(r"5060/5061 are privileged", text)
    assert "below 1024" in text
