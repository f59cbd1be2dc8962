"""A `tls.certificate` outside its dates is refused wherever a config is loaded: check-config,
`run` and a SIGHUP reload, with the field path; its last 30 days are a warning."""

from __future__ import annotations

import datetime as dt
import json
import signal
import urllib.request
from pathlib import Path

import pytest

from tests.certs.factory import NOW, Authority, key_pem, pem, write
from tests.cli.console import lyncgate
from tests.daemon.harness import Daemon
from tests.kit.nodes import loopback_node
from tests.peers import free_port

FQDN = "gw.example.com"


def node_files(folder: Path, *, not_before: dt.datetime | None = None,
               not_after: dt.datetime | None = None, name: str = "node") -> tuple[Path, Path]:
    cert, key = Authority.root().issue(FQDN, not_before=not_before, not_after=not_after)
    return (write(folder / f"{name}.pem", pem(cert)), write(folder / f"{name}.key", key_pem(key)))


def config_text(cert: Path, key: Path, *, api_port: int = 0) -> str:
    return loopback_node(FQDN) + f"""
[tls]
certificate = "{cert}"
private_key = "{key}"
verify_mode = "off"
[api]
port = {api_port}
"""


def write_config(folder: Path, text: str) -> Path:
    for marker in ("@UDP@", "@TCP@", "@TLS@"):
        text = text.replace(marker, str(free_port()))
    path = folder / "lyncgate.toml"
    path.write_text(text.replace("@STATE@", str(folder / "state")))
    return path


@pytest.mark.parametrize(("start", "end", "words"), [
    (NOW - dt.timedelta(days=10), NOW - dt.timedelta(days=2), "expired on"),
    (NOW + dt.timedelta(days=2), NOW + dt.timedelta(days=200), "not yet valid: valid from"),
])
def test_check_config_and_run_refuse_a_certificate_outside_its_dates(
    tmp_path: Path, start: dt.datetime, end: dt.datetime, words: str,
) -> None:
    cert, key = node_files(tmp_path, not_before=start, not_after=end)
    config = write_config(tmp_path, config_text(cert, key))
    checked = lyncgate("check-config", str(config))
    assert checked.returncode == 2, checked.stdout + checked.stderr
    assert f"{config}: tls.certificate: {cert}: {words}" in checked.stderr
    started = lyncgate("run", "--config", str(config), timeout=30)
    assert started.returncode == 2, started.stderr
    assert f"tls.certificate: {cert}: {words}" in started.stderr
    assert "node_started" not in started.stderr


def test_a_certificate_in_its_last_month_is_valid_with_a_warning(tmp_path: Path) -> None:
    cert, key = node_files(tmp_path, not_after=NOW + dt.timedelta(days=10, hours=1))
    done = lyncgate("check-config", str(write_config(tmp_path, config_text(cert, key))))
    assert done.returncode == 0, done.stderr
    assert f"warning: tls.certificate: {cert}: expires on" in done.stderr
    assert "in 10 days; renew it" in done.stderr


def test_reload_refuses_an_expired_certificate_and_a_start_warns_of_a_near_end(
    tmp_path: Path,
) -> None:
    """The node starts on a certificate with 10 days left (logged, and in /status); a SIGHUP
    onto an expired one is refused with the field path, and the running config stays."""
    near, near_key = node_files(tmp_path, not_after=NOW + dt.timedelta(days=10, hours=1))
    api = free_port()
    daemon = Daemon(tmp_path, config_text(near, near_key, api_port=api))
    try:
        warned = daemon.wait_event("config_warning")
        assert warned[0]["warning"].startswith(f"tls.certificate: {near}: expires on")
        with urllib.request.urlopen(f"http://127.0.0.1:{api}/status", timeout=5) as answer:
            status = json.load(answer)
        assert status["warnings"] == [warned[0]["warning"]]
        old, old_key = node_files(tmp_path, not_before=NOW - dt.timedelta(days=10),
                                  not_after=NOW - dt.timedelta(days=1), name="old")
        daemon.write_config(config_text(old, old_key, api_port=api))
        daemon.signal(signal.SIGHUP)
        refused = daemon.wait_event("reload_refused")
        assert any(p.startswith(f"tls.certificate: {old}: expired on")
                   for p in refused[0]["problems"]), refused
        assert not daemon.events("config_reloaded")
    finally:
        daemon.stop()
