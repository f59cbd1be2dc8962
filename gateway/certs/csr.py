"""Private keys and certificate signing requests, as the reference guide's CSR generator makes
them: CN from the node's SIP TLS FQDN (or a pool name), every FQDN in the SAN (the CN too
unless told otherwise), serverAuth and clientAuth (the node is a TLS client toward Lync), and
optionally Microsoft's certificate template extension naming `WebServer`."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from gateway.certs.errors import CertificateError

KEY_TYPES = ("rsa2048", "rsa4096", "ec256", "ec384")
# szOID_ENROLL_CERTTYPE_EXTENSION: a Microsoft CA picks the template named in it.
MS_TEMPLATE_OID = ObjectIdentifier("1.3.6.1.4.1.311.20.2")
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
# RFC 1123 host names, the only names a SIP TLS certificate carries (RFC 5922).
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DNS_NAME = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")


def check_dns_name(name: str, what: str) -> None:
    """Refuse what no CA signs and no peer matches, before a key is made for it."""
    if "*" in name:
        raise CertificateError(f"{what} {name}: wildcard names are not allowed for SIP "
                               "(RFC 5922)")
    if len(name) > 253 or not _DNS_NAME.match(name):
        raise CertificateError(f"{what} {name!r} is not a valid DNS name: dot-separated "
                               "labels of letters, digits and hyphens, e.g. "
                               "gw1.vc.example.com")


@dataclass(frozen=True, slots=True)
class Subject:
    common_name: str
    organization: str = ""
    organizational_unit: str = ""
    locality: str = ""
    state: str = ""
    country: str = ""  # two letters

    def name(self) -> x509.Name:
        """The X.509 name; refuses what X.509 does (a CN over 64 characters, say) in words."""
        if self.country and len(self.country) != 2:
            raise CertificateError(f"country {self.country!r} must be a two-letter code")
        attributes = []
        for oid, field, value in (
            (NameOID.COMMON_NAME, "common name", self.common_name),
            (NameOID.ORGANIZATION_NAME, "organization", self.organization),
            (NameOID.ORGANIZATIONAL_UNIT_NAME, "department", self.organizational_unit),
            (NameOID.LOCALITY_NAME, "locality", self.locality),
            (NameOID.STATE_OR_PROVINCE_NAME, "state", self.state),
            (NameOID.COUNTRY_NAME, "country", self.country.upper()),
        ):
            if value or oid == NameOID.COMMON_NAME:
                try:
                    attributes.append(x509.NameAttribute(oid, value))
                except ValueError as exc:
                    raise CertificateError(f"{field} {value!r}: {exc}") from exc
        return x509.Name(attributes)


def new_key(kind: str) -> PrivateKey:
    if kind == "rsa2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "rsa4096":
        return rsa.generate_private_key(public_exponent=65537, key_size=4096)
    if kind == "ec256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ec384":
        return ec.generate_private_key(ec.SECP384R1())
    raise CertificateError(f"unknown key type {kind!r}; choose one of {', '.join(KEY_TYPES)}")


def read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except PermissionError as exc:
        # Under systemd this process is the daemon's user, not the operator who wrote the file.
        raise CertificateError(f"{path}: cannot read: {exc.strerror} (this process runs as "
                               f"uid {os.geteuid()})") from exc
    except OSError as exc:
        raise CertificateError(f"{path}: cannot read: {exc.strerror or exc}") from exc


def load_key(path: Path) -> PrivateKey:
    data = read_file(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"{path}: cannot read a private key: {exc}") from exc
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise CertificateError(f"{path}: only RSA and ECDSA keys are supported")
    return key


def san_names(common_name: str, fqdns: list[str], *, include_cn: bool) -> list[str]:
    """The SAN dNSNames: the CN first (unless excluded), then each FQDN once, in order."""
    names: list[str] = []
    for name in ([common_name] if include_cn else []) + fqdns:
        name = name.strip().rstrip(".").lower()
        if not name:
            continue
        check_dns_name(name, "SAN")
        if name not in names:
            names.append(name)
    if not names:
        raise CertificateError("no FQDN for the SAN: give --fqdn or keep the CN in the SAN")
    return names


def build_csr(
    key: PrivateKey, subject: x509.Name, names: list[str], *, template: str | None = None
) -> x509.CertificateSigningRequest:
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                       critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                   ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_encipherment=isinstance(
                key, rsa.RSAPrivateKey), content_commitment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False),
            critical=True,
        )
    )
    if template:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(MS_TEMPLATE_OID, _bmp_string(template)), critical=False
        )
    return builder.sign(key, hashes.SHA256())


def _bmp_string(text: str) -> bytes:
    """DER BMPString, the type Microsoft's template-name extension holds."""
    body = text.encode("utf-16-be")
    if len(body) >= 128:
        raise CertificateError("certificate template name too long")
    return bytes([0x1E, len(body)]) + body


def refuse_existing_key(path: Path, *, force: bool) -> None:
    if path.exists() and not force:
        raise CertificateError(f"{path} exists: it may be the key of a certificate in use; "
                               "pass --force to replace it")


def write_private_key(key: PrivateKey, path: Path, *, force: bool) -> None:
    """PEM, mode 0600 from the first byte; an existing key is never replaced without force."""
    refuse_existing_key(path, force=force)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    os.replace(tmp, path)


def write_pem(data: bytes, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
