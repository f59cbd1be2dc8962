"""`lyncgate cert import` and `cert check`: each of the guide's upload errors refused with its
own message, a good certificate installed with its chain, and the installed one checked."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.cli import main
from tests.certs.factory import NOW, Authority, key_pem, pem, write

FQDN = "conf01.vc.example.com"
Issuer = Callable[[Authority], tuple[Authority, list[x509.Certificate]]]


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Authority, Authority]:
    root = Authority.root()
    issuing = root.intermediate()
    write(tmp_path / "trusted.pem", pem(root.cert))
    config = tmp_path / "lyncgate.toml"
    config.write_text(
        f'[node]\nsip_tls_fqdn = "{FQDN}"\naddress = "127.0.0.1"\n'
        f'[tls]\ncertificate = "installed.pem"\nprivate_key = "installed.key"\n'
        f'trusted_ca = "trusted.pem"\n'
    )
    return config, root, issuing


def run_import(tmp_path: Path, config: Path, cert: x509.Certificate, key: object,
               chain: list[x509.Certificate]) -> int:
    write(tmp_path / "signed.pem", pem(cert))
    write(tmp_path / "csr.key", key_pem(key))  # type: ignore[arg-type]
    args = ["cert", "import", str(tmp_path / "signed.pem"), "--key", str(tmp_path / "csr.key"),
            "--config", str(config)]
    if chain:
        args += ["--chain", str(write(tmp_path / "chain.pem", *(pem(c) for c in chain)))]
    return main(args)


def test_good_certificate_is_installed_with_its_chain_and_then_checks_clean(
    tmp_path: Path, setup: tuple[Path, Authority, Authority],
    capsys: pytest.CaptureFixture[str],
) -> None:
    config, root, issuing = setup
    cert, key = issuing.issue(FQDN, "pool.vc.example.com")
    assert run_import(tmp_path, config, cert, key, [issuing.cert, root.cert]) == 0
    installed = x509.load_pem_x509_certificates((tmp_path / "installed.pem").read_bytes())
    assert installed == [cert, issuing.cert]  # the root is not sent to peers
    assert (tmp_path / "installed.key").stat().st_mode & 0o777 == 0o600
    capsys.readouterr()
    assert main(["cert", "check", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "days left" in out and "FAIL" not in out


def expect_refusal(tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str],
                   cert: x509.Certificate, key: object, chain: list[x509.Certificate],
                   message: str) -> None:
    assert run_import(tmp_path, config, cert, key, chain) == 1
    out = capsys.readouterr().out
    assert any(line.startswith("FAIL") and message in line for line in out.splitlines()), out
    assert not (tmp_path / "installed.pem").exists()


def test_certificate_for_another_key(
    tmp_path: Path, setup: tuple[Path, Authority, Authority],
    capsys: pytest.CaptureFixture[str],
) -> None:
    config, _, issuing = setup
    cert, _ = issuing.issue(FQDN)
    expect_refusal(tmp_path, config, capsys, cert, ec.generate_private_key(ec.SECP256R1()),
                   [issuing.cert], "do not appear to be part of the same key pair")


@pytest.mark.parametrize(("start", "end", "message"), [
    (NOW - dt.timedelta(days=30), NOW - dt.timedelta(days=1), "expired on"),
    (NOW + dt.timedelta(days=2), NOW + dt.timedelta(days=300), "not yet valid"),
])
def test_dates(tmp_path: Path, setup: tuple[Path, Authority, Authority],
               capsys: pytest.CaptureFixture[str], start: dt.datetime, end: dt.datetime,
               message: str) -> None:
    config, _, issuing = setup
    cert, key = issuing.issue(FQDN, not_before=start, not_after=end)
    expect_refusal(tmp_path, config, capsys, cert, key, [issuing.cert], message)


def test_incomplete_chain_names_the_missing_issuer(
    tmp_path: Path, setup: tuple[Path, Authority, Authority],
    capsys: pytest.CaptureFixture[str],
) -> None:
    config, _, issuing = setup
    cert, key = issuing.issue(FQDN)
    expect_refusal(tmp_path, config, capsys, cert, key, [],
                   "chain incomplete: missing issuer CN=Test Issuing CA")


@pytest.mark.parametrize(("usages", "message"), [
    ((ExtendedKeyUsageOID.SERVER_AUTH,), "lacks clientAuth"),
    ((ExtendedKeyUsageOID.CLIENT_AUTH,), "lacks serverAuth"),
    (None, "no extended key usage"),
])
def test_extended_key_usage(tmp_path: Path, setup: tuple[Path, Authority, Authority],
                            capsys: pytest.CaptureFixture[str],
                            usages: tuple[x509.ObjectIdentifier, ...] | None,
                            message: str) -> None:
    config, _, issuing = setup
    cert, key = issuing.issue(FQDN, usages=usages)
    expect_refusal(tmp_path, config, capsys, cert, key, [issuing.cert], message)


def test_fqdn_missing_from_san(tmp_path: Path, setup: tuple[Path, Authority, Authority],
                               capsys: pytest.CaptureFixture[str]) -> None:
    config, _, issuing = setup
    cert, key = issuing.issue("conf02.vc.example.com")
    expect_refusal(tmp_path, config, capsys, cert, key, [issuing.cert],
                   f"SIP TLS FQDN {FQDN} is not in the certificate's SAN")


def test_wildcard_certificate(tmp_path: Path, setup: tuple[Path, Authority, Authority],
                              capsys: pytest.CaptureFixture[str]) -> None:
    config, _, issuing = setup
    cert, key = issuing.issue(FQDN, "*.vc.example.com")
    expect_refusal(tmp_path, config, capsys, cert, key, [issuing.cert], "wildcard name(s)")


def test_weak_rsa_key(tmp_path: Path, setup: tuple[Path, Authority, Authority],
                      capsys: pytest.CaptureFixture[str]) -> None:
    config, _, issuing = setup
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    cert, key = issuing.issue(FQDN, key=weak)
    expect_refusal(tmp_path, config, capsys, cert, key, [issuing.cert],
                   "RSA key of 1024 bits is too weak")


def test_check_fails_on_what_is_installed(
    tmp_path: Path, setup: tuple[Path, Authority, Authority],
    capsys: pytest.CaptureFixture[str],
) -> None:
    config, _, issuing = setup
    cert, key = issuing.issue("other.example.com")
    write(tmp_path / "installed.pem", pem(cert), pem(issuing.cert))
    write(tmp_path / "installed.key", key_pem(key))
    assert main(["cert", "check", "--config", str(config)]) == 1
    assert "FAIL  san" in capsys.readouterr().out


def test_a_root_sent_in_the_bundle_is_not_trusted_for_being_there(
    tmp_path: Path, setup: tuple[Path, Authority, Authority],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A chain must end at a CA of the trust store (tls.trusted_ca or the system store): a
    self-made root passed in --chain completes the chain on paper only, and is refused."""
    config, _, _ = setup
    rogue = Authority.root("Rogue Root")
    cert, key = rogue.issue(FQDN)
    expect_refusal(tmp_path, config, capsys, cert, key, [rogue.cert],
                   "chain ends at root CN=Rogue Root, which is not a trusted CA")


def leaf_posing_as_ca(root: Authority) -> tuple[Authority, list[x509.Certificate]]:
    fake = root.as_issuer("Not A CA")
    return fake, [fake.cert]


def expired_ca(root: Authority) -> tuple[Authority, list[x509.Certificate]]:
    old = root.intermediate("Old CA", not_after=NOW - dt.timedelta(days=1))
    return old, [old.cert]


def ca_without_key_cert_sign(root: Authority) -> tuple[Authority, list[x509.Certificate]]:
    usage = x509.KeyUsage(digital_signature=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          key_cert_sign=False, crl_sign=True, encipher_only=False,
                          decipher_only=False)
    signer = root.intermediate("Signing CA", key_usage=usage)
    return signer, [signer.cert]


def ca_beyond_path_length(root: Authority) -> tuple[Authority, list[x509.Certificate]]:
    first = root.intermediate()  # pathLenConstraint 0: no CA may sit below it
    second = first.intermediate("Second CA")
    return second, [second.cert, first.cert]


def impostor_of_the_issuer(root: Authority) -> tuple[Authority, list[x509.Certificate]]:
    genuine, impostor = root.intermediate(), root.intermediate()  # same name, other keys
    return genuine, [impostor.cert]


@pytest.mark.parametrize(("issuer", "message"), [
    (leaf_posing_as_ca, "issuer CN=Not A CA is not a CA certificate"),
    (expired_ca, "issuer CN=Old CA expired on"),
    (ca_without_key_cert_sign, "issuer CN=Signing CA may not sign certificates (its key "
     "usage lacks keyCertSign)"),
    (ca_beyond_path_length, "issuer CN=Test Issuing CA allows 0 CA certificate(s) below it "
     "(pathLenConstraint)"),
    (impostor_of_the_issuer, "chain incomplete: missing issuer CN=Test Issuing CA"),
])
def test_every_issuer_must_be_a_valid_ca_whose_signature_checks(
    tmp_path: Path, setup: tuple[Path, Authority, Authority],
    capsys: pytest.CaptureFixture[str],
    issuer: Issuer, message: str,
) -> None:
    """Each certificate the chain passes through must be a CA (basicConstraints CA:TRUE,
    keyCertSign when key usage is given, path length respected), within its dates, and must
    have signed the one below it: each failure has its own message."""
    config, root, _ = setup
    authority, bundle = issuer(root)
    cert, key = authority.issue(FQDN)
    expect_refusal(tmp_path, config, capsys, cert, key, bundle, message)
