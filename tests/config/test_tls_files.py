"""The `[tls]` files are checked when the config is loaded: each missing, unreadable, non-PEM or
mismatched file is a problem with its field path, all of them at once, while a config without
files (the daemon's self-signed case) stays valid."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config.load import load_default, load_file
from tests.certs.factory import Authority, key_pem, pem, write
from tests.daemon.harness import ROOT


def config(folder: Path, **tls: Path) -> Path:
    path = folder / "lyncgate.toml"
    lines = "".join(f'{field} = "{value}"\n' for field, value in tls.items())
    path.write_text(f'[node]\nsip_tls_fqdn = "gw.example.com"\n[tls]\n{lines}')
    return path


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A node certificate, its key and the CA that issued it."""
    root = Authority.root()
    cert, key = root.issue("gw.example.com")
    return (write(tmp_path / "node.pem", pem(cert)), write(tmp_path / "node.key", key_pem(key)),
            write(tmp_path / "ca.pem", pem(root.cert)))


def test_good_files_and_no_files_are_valid(tmp_path: Path, pair: tuple[Path, Path, Path]) -> None:
    """Readable PEM that fits passes; no files at all passes too (the daemon then makes a
    self-signed pair in its state directory), and so does the embedded default."""
    cert, key, ca = pair
    assert load_file(config(tmp_path, certificate=cert, private_key=key, trusted_ca=ca))
    assert load_file(config(tmp_path)).tls.certificate is None
    assert load_default().tls.certificate is None


def test_every_bad_file_is_reported_with_its_field(
    tmp_path: Path, pair: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str],
) -> None:
    """check-config names each field: a missing certificate, a key file that holds a
    certificate, a trusted_ca that is a directory; all reported in one run."""
    _, _, ca = pair
    path = config(tmp_path, certificate=tmp_path / "gone.pem", private_key=ca,
                  trusted_ca=tmp_path)
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"tls.certificate: {tmp_path / 'gone.pem'}: cannot read: No such file" in err
    assert f"tls.private_key: {ca}: cannot read a private key" in err
    assert f"tls.trusted_ca: {tmp_path}: cannot read: Is a directory" in err
    assert "3 problems; not valid" in err


def test_a_key_of_another_certificate_is_reported(
    tmp_path: Path, pair: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str],
) -> None:
    """A key that is not the certificate's is refused at load in the guide's words, not by
    OpenSSL when the listener starts."""
    cert, _, _ = pair
    other = write(tmp_path / "other.key", key_pem(Authority.root().key))
    assert main(["check-config", str(config(tmp_path, certificate=cert, private_key=other))]) == 2
    assert ("tls.private_key: " + str(other) + ": Certificate and private key do not appear to "
            "be part of the same key pair") in capsys.readouterr().err


def test_a_key_this_process_cannot_read_is_reported(tmp_path: Path) -> None:
    """check-config runs as the daemon's user (systemd's ExecStartPre): a key that user may
    not read is a tls.private_key problem naming the uid, found before the daemon starts."""
    root = Authority.root()
    cert, key = root.issue("gw.example.com")
    key_path = write(tmp_path / "node.key", key_pem(key))
    key_path.chmod(0)
    path = config(tmp_path, certificate=write(tmp_path / "node.pem", pem(cert)),
                  private_key=key_path)
    # Root reads any file; without these two capabilities it is bound by the mode like anyone.
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    done = subprocess.run([*(drop if os.geteuid() == 0 else []), sys.executable, "-m",
                           "gateway.cli", "check-config", str(path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert (f"tls.private_key: {key_path}: cannot read: Permission denied (this process runs "
            f"as uid {os.geteuid()})") in done.stderr
