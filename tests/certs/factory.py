"""A throwaway CA made with cryptography, able to issue the broken certificates the import
checks must refuse (wrong usages, wildcards, weak keys, odd dates, issuers that are no CA)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = dt.datetime.now(dt.UTC)
BOTH = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)
Key = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: Key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass
class Authority:
    name: str
    key: Key
    cert: x509.Certificate

    @classmethod
    def root(cls, name: str = "Test Root CA") -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(NOW - dt.timedelta(days=1))
                .not_valid_after(NOW + dt.timedelta(days=3650))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
        return cls(name, key, cert)

    def intermediate(self, name: str = "Test Issuing CA", *,
                     not_after: dt.datetime | None = None,
                     key_usage: x509.KeyUsage | None = None) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                   .issuer_name(self.cert.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(NOW - dt.timedelta(days=30))
                   .not_valid_after(not_after or NOW + dt.timedelta(days=1800))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True))
        if key_usage is not None:
            builder = builder.add_extension(key_usage, critical=True)
        return Authority(name, key, builder.sign(self.key, hashes.SHA256()))

    def as_issuer(self, name: str) -> Authority:
        """A leaf certificate (CA:FALSE) of this authority, posing as an intermediate CA."""
        cert, key = self.issue(name)
        return Authority(name, key, cert)

    def issue(
        self, *names: str, key: Key | None = None, usages: tuple[x509.ObjectIdentifier, ...]
        | None = BOTH, not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
    ) -> tuple[x509.Certificate, Key]:
        key = key or ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
                   .issuer_name(self.cert.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(not_before or NOW - dt.timedelta(days=1))
                   .not_valid_after(not_after or NOW + dt.timedelta(days=365))
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                                  critical=False))
        if usages is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        return builder.sign(self.key, hashes.SHA256()), key


def write(path: Path, *items: bytes) -> Path:
    path.write_bytes(b"".join(items))
    return path
