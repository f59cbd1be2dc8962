"""CSRs as the guide's generator makes them, read back with cryptography and `openssl req`."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.certs.csr import MS_TEMPLATE_OID, san_names
from gateway.certs.errors import CertificateError
from gateway.cli import main


def make(tmp_path: Path, *args: str) -> tuple[int, x509.CertificateSigningRequest | None]:
    code = main(["csr", "--out-key", str(tmp_path / "node.key"),
                 "--out-csr", str(tmp_path / "node.csr"), *args])
    csr_path = tmp_path / "node.csr"
    if not csr_path.exists():
        return code, None
    return code, x509.load_pem_x509_csr(csr_path.read_bytes())


def test_default_csr_has_cn_in_san_both_usages_and_rsa2048(tmp_path: Path) -> None:
    code, csr = make(tmp_path, "--cn", "conf01.vc.example.com",
                     "--fqdn", "conf02.vc.example.com", "--fqdn", "pool.vc.example.com")
    assert code == 0 and csr is not None and csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "conf01.vc.example.com")
    sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [
        "conf01.vc.example.com", "conf02.vc.example.com", "pool.vc.example.com"]
    eku = csr.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    public = csr.public_key()
    assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 2048
    assert stat.S_IMODE((tmp_path / "node.key").stat().st_mode) == 0o600


@pytest.mark.parametrize(("kind", "size"), [("rsa4096", 4096), ("ec256", 256), ("ec384", 384)])
def test_key_types(tmp_path: Path, kind: str, size: int) -> None:
    code, csr = make(tmp_path, "--cn", "gw.example.com", "--key-type", kind)
    assert code == 0 and csr is not None
    public = csr.public_key()
    if kind.startswith("rsa"):
        assert isinstance(public, rsa.RSAPublicKey) and public.key_size == size
    else:
        assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.key_size == size


def test_ms_template_org_fields_and_cn_left_out_of_san(tmp_path: Path) -> None:
    code, csr = make(tmp_path, "--cn", "pool.example.com", "--fqdn", "n1.example.com",
                     "--no-cn-in-san", "--ms-template", "--org", "Example Ltd", "--ou", "VC",
                     "--locality", "Oslo", "--state", "Oslo", "--country", "no")
    assert code == 0 and csr is not None
    template = csr.extensions.get_extension_for_oid(MS_TEMPLATE_OID).value
    assert isinstance(template, x509.UnrecognizedExtension)
    assert template.value == b"\x1e\x12" + "WebServer".encode("utf-16-be")
    sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["n1.example.com"]
    assert csr.subject.rfc4514_string() == (
        "C=NO,ST=Oslo,L=Oslo,OU=VC,O=Example Ltd,CN=pool.example.com")
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is not installed: run scripts/install --test")
    text = subprocess.run([openssl, "req", "-in", str(tmp_path / "node.csr"), "-noout", "-text",
                           "-verify"], capture_output=True, text=True, check=True)
    assert "DNS:n1.example.com" in text.stdout
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in text.stdout
    assert "1.3.6.1.4.1.311.20.2" in text.stdout
    assert "verify OK" in text.stdout + text.stderr


def test_existing_key_is_never_overwritten_without_force(tmp_path: Path) -> None:
    (tmp_path / "node.key").write_text("precious")
    code, csr = make(tmp_path, "--cn", "gw.example.com")
    assert code == 1 and csr is None
    assert (tmp_path / "node.key").read_text() == "precious"
    code, csr = make(tmp_path, "--cn", "gw.example.com", "--force")
    assert code == 0 and csr is not None


def test_an_existing_key_file_can_be_used(tmp_path: Path) -> None:
    assert make(tmp_path, "--cn", "gw.example.com", "--key-type", "ec256")[0] == 0
    first = x509.load_pem_x509_csr((tmp_path / "node.csr").read_bytes()).public_key()
    (tmp_path / "node.csr").unlink()
    code = main(["csr", "--cn", "gw.example.com", "--key", str(tmp_path / "node.key"),
                 "--out-csr", str(tmp_path / "again.csr")])
    again = x509.load_pem_x509_csr((tmp_path / "again.csr").read_bytes()).public_key()
    assert code == 0 and again == first


def test_wildcards_are_refused() -> None:
    with pytest.raises(CertificateError, match="wildcard"):
        san_names("gw.example.com", ["*.example.com"], include_cn=True)


@pytest.mark.parametrize("bad", [["--country", "GBR"], ["--cn", "a" * 60 + ".example.com"]])
def test_a_refused_subject_writes_nothing_so_the_corrected_run_needs_no_force(
    tmp_path: Path, bad: list[str], capsys: pytest.CaptureFixture[str],
) -> None:
    """Every input (SANs, subject fields, X.509's 64-character CN limit) is checked before any
    file is written: a refused run leaves no key behind to block the corrected one."""
    code, csr = make(tmp_path, "--cn", "gw.example.com", *bad)
    assert code == 2 and csr is None  # a wrong argument: the exit code of a usage error
    assert "lyncgate csr:" in capsys.readouterr().err
    assert not (tmp_path / "node.key").exists()
    assert make(tmp_path, "--cn", "gw.example.com", "--country", "GB")[0] == 0


def test_csr_for_an_existing_key_is_written_beside_that_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`--key FILE` without --out-csr writes FILE's name with .csr beside FILE, and nothing
    where a new key would have gone (the state directory)."""
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    assert make(tmp_path, "--cn", "gw.example.com", "--key-type", "ec256")[0] == 0
    keys = tmp_path / "keys"
    keys.mkdir()
    (tmp_path / "node.key").rename(keys / "gw.key")
    assert main(["csr", "--cn", "gw.example.com", "--key", str(keys / "gw.key")]) == 0
    csr = x509.load_pem_x509_csr((keys / "gw.csr").read_bytes())
    assert csr.is_signature_valid and not (tmp_path / "state").exists()
