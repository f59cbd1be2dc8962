"""The daemon and bad `[tls]` files: `run` refuses to start naming the field, and a SIGHUP
reload is refused with the field path while the listener keeps the certificate it had."""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import trustme

from tests.daemon.harness import ROOT, Daemon
from tests.kit.nodes import BASE
from tests.peers import free_port

pytestmark = pytest.mark.peer


def issue(tmp_path: Path, ca: trustme.CA) -> bytes:
    """node.pem and node.key for gw.example.com; returns the certificate (DER)."""
    issued = ca.issue_cert("gw.example.com")
    issued.cert_chain_pems[0].write_to_path(tmp_path / "node.pem")
    issued.private_key_pem.write_to_path(tmp_path / "node.key")
    return ssl.PEM_cert_to_DER_cert(issued.cert_chain_pems[0].bytes().decode())


def node_config(tmp_path: Path, key_name: str = "node.key") -> str:
    """The daemon tests' node with the certificate issued here and the key `key_name`."""
    return BASE.replace('verify_mode = "off"', f'certificate = "{tmp_path / "node.pem"}"\n'
                        f'private_key = "{tmp_path / key_name}"\nverify_mode = "off"')


def test_run_with_a_missing_key_exits_naming_the_field(tmp_path: Path) -> None:
    """Not `listen_failed '[Errno 2] ...'`: the config is refused before any listener, with
    tls.private_key and the file in the message."""
    issue(tmp_path, trustme.CA())
    config = tmp_path / "lyncgate.toml"
    text = node_config(tmp_path, "gone.key").replace("@STATE@", str(tmp_path / "state"))
    for port in ("@UDP@", "@TCP@", "@TLS@"):
        text = text.replace(port, str(free_port()))
    config.write_text(text)
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "run", "--config", str(config)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert f"tls.private_key: {tmp_path / 'gone.key'}: cannot read" in done.stderr


def test_reload_with_a_missing_key_is_refused_and_tls_keeps_its_certificate(
    tmp_path: Path,
) -> None:
    """SIGHUP with tls.private_key pointing at no file: reload_refused names the field and the
    file, and TLS clients still get the certificate the node started with."""
    ca = trustme.CA()
    served = issue(tmp_path, ca)
    daemon = Daemon(tmp_path, node_config(tmp_path))
    try:
        daemon.write_config(node_config(tmp_path, "gone.key"))
        daemon.signal(signal.SIGHUP)
        problems = daemon.wait_event("reload_refused")[0]["problems"]
        assert any(p.startswith(f"tls.private_key: {tmp_path / 'gone.key'}: cannot read")
                   for p in problems), problems
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        with socket.create_connection(("127.0.0.1", daemon.tls), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname="gw.example.com") as tls:
            assert tls.getpeercert(binary_form=True) == served
    finally:
        daemon.stop()
