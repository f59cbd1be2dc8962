"""`lyncgate csr` and `lyncgate cert` through the console script, as an operator runs them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.certs.factory import Authority, key_pem, pem, write
from tests.cli.console import lyncgate

FQDN = "gw.vc.example.com"


@pytest.mark.parametrize("name", ["bad name!", "gw_1.example.com", "gw-.example.com",
                                  "gw..example.com"])
def test_csr_refuses_a_name_that_is_no_dns_name_and_writes_nothing(
    tmp_path: Path, name: str,
) -> None:
    done = lyncgate("csr", "--cn", FQDN, f"--fqdn={name}", "--out-key", str(tmp_path / "n.key"))
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert f"SAN {name!r} is not a valid DNS name" in done.stderr
    assert not list(tmp_path.iterdir())


def test_csr_summary_shows_every_subject_field_and_the_next_step_names_the_tls_section(
    tmp_path: Path,
) -> None:
    done = lyncgate("csr", "--cn", FQDN, "--org", "Example Ltd", "--ou", "VC", "--country",
                    "gb", "--key-type", "ec256", "--out-key", str(tmp_path / "n.key"))
    assert done.returncode == 0, done.stderr
    assert "subject:     CN=gw.vc.example.com, O=Example Ltd, OU=VC, C=GB" in done.stdout
    assert "[tls] section" in done.stdout
    assert f'private_key = "{tmp_path / "n.key"}"' in done.stdout
    assert "lyncgate cert import SIGNED.pem --chain BUNDLE.pem --config FILE" in done.stdout


def test_csr_next_step_with_a_config_whose_tls_section_holds_the_key(tmp_path: Path) -> None:
    config = tmp_path / "lyncgate.toml"
    config.write_text(f'[node]\nsip_tls_fqdn = "{FQDN}"\n'
                      '[tls]\ncertificate = "node.pem"\nprivate_key = "node.key"\n')
    done = lyncgate("csr", "--config", str(config), "--key-type", "ec256")
    assert done.returncode == 0, done.stderr
    assert f"lyncgate cert import SIGNED.pem --chain BUNDLE.pem --config {config}" \
        in done.stdout
    assert (tmp_path / "node.key").exists() and (tmp_path / "node.csr").exists()


def test_import_of_a_certificate_from_an_untrusted_root_says_where_trust_comes_from(
    tmp_path: Path,
) -> None:
    """A certificate issued straight by a root nobody trusts: the refusal says the root is
    not trusted and that trust comes from tls.trusted_ca, not only "add intermediates"."""
    trusted, untrusted = Authority.root("Trusted Root"), Authority.root("Enterprise Root")
    write(tmp_path / "trusted.pem", pem(trusted.cert))
    config = tmp_path / "lyncgate.toml"
    config.write_text(f'[node]\nsip_tls_fqdn = "{FQDN}"\n[tls]\ncertificate = "node.pem"\n'
                      'private_key = "node.key"\ntrusted_ca = "trusted.pem"\n')
    cert, key = untrusted.issue(FQDN)
    done = lyncgate("cert", "import", str(write(tmp_path / "signed.pem", pem(cert))),
                    "--key", str(write(tmp_path / "csr.key", key_pem(key))),
                    "--config", str(config))
    assert done.returncode == 1, done.stdout + done.stderr
    assert ("missing issuer CN=Enterprise Root: it is neither a trusted CA nor in the bundle. "
            "If it is your root CA, it is not trusted: trust comes from tls.trusted_ca") \
        in done.stdout
    assert not (tmp_path / "node.pem").exists()


def test_import_of_a_file_that_cannot_be_read_is_a_usage_error(tmp_path: Path) -> None:
    config = tmp_path / "lyncgate.toml"
    config.write_text('[tls]\ncertificate = "node.pem"\nprivate_key = "node.key"\n')
    done = lyncgate("cert", "import", str(tmp_path / "nothere.pem"), "--config", str(config))
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and "nothere.pem: cannot read" in done.stderr


@pytest.mark.parametrize(("action", "words"), [
    ("import", "Check a CA-signed certificate against its private key"),
    ("check", "Check the certificate installed where [tls] certificate points"),
])
def test_cert_actions_describe_themselves(action: str, words: str) -> None:
    done = lyncgate("cert", action, "--help")
    assert done.returncode == 0
    assert " ".join(done.stdout.split()).count(words) == 1, done.stdout
