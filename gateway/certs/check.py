"""The checks a node certificate must pass before Lync will trust it, each with a message an
operator can act on (the reference guide's upload errors, in its words where it has them)."""

from __future__ import annotations

import datetime as dt
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.certs.csr import PrivateKey, read_file
from gateway.certs.errors import CertificateError
from gateway.certs.names import matches, sip_names, wildcard_names

Level = Literal["pass", "warn", "fail"]
SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
EXPIRY_WARNING = dt.timedelta(days=30)
MAX_CHAIN = 10
# The guide's wording for a certificate that is not the key's (its upload error table).
KEY_PAIR_MISMATCH = "Certificate and private key do not appear to be part of the same key pair"


@dataclass(frozen=True, slots=True)
class Finding:
    check: str  # key_pair, validity, chain, eku, san, wildcard, key_strength
    level: Level
    message: str


def load_certificates(path: Path) -> list[x509.Certificate]:
    data = read_file(path)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise CertificateError(f"{path}: cannot read PEM certificates: {exc}") from exc
    if not certs:
        raise CertificateError(f"{path}: no certificate in the file")
    return certs


def trust_store(extra: Path | None) -> list[x509.Certificate]:
    """Anchors that may complete a chain: `tls.trusted_ca` and the system store.

    They stand for what Lync trusts: an on-prem pool trusts the enterprise CA that issued its
    own certificate, which the guide has the operator load into the node's Trusted CA
    Certificates (`tls.trusted_ca`); federation through a public DMZ needs a public CA, which
    the system store holds. A root that comes only in the bundle is nobody's anchor."""
    anchors = load_certificates(extra) if extra is not None else []
    if SYSTEM_CA_BUNDLE.exists():
        # Some distribution roots predate RFC 5280's serial number rules; cryptography warns
        # about them, which says nothing about the operator's certificate.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            anchors.extend(load_certificates(SYSTEM_CA_BUNDLE))
    return anchors


def check_certificate(
    leaf: x509.Certificate,
    intermediates: list[x509.Certificate],
    key: PrivateKey | None,
    fqdns: list[str],
    now: dt.datetime,
    anchors: list[x509.Certificate],
) -> list[Finding]:
    findings = [
        _key_pair(leaf, key),
        _validity(leaf, now),
        _chain(leaf, intermediates, anchors, now),
        _eku(leaf),
        _wildcards(leaf),
        _key_strength(leaf),
    ]
    findings.extend(_san(leaf, fqdn) for fqdn in fqdns)
    return [f for f in findings if f is not None]


def _key_pair(leaf: x509.Certificate, key: PrivateKey | None) -> Finding | None:
    if key is None:
        return None
    if not same_key_pair(leaf, key):
        return Finding("key_pair", "fail", f"{KEY_PAIR_MISMATCH} (was it issued for another CSR?)")
    return Finding("key_pair", "pass", "certificate matches the private key")


def same_key_pair(cert: x509.Certificate, key: PrivateKey) -> bool:
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)


def _validity(leaf: x509.Certificate, now: dt.datetime) -> Finding:
    start, end = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    if now < start:
        return Finding("validity", "fail", f"not yet valid: valid from {start:%Y-%m-%d %H:%M} UTC")
    if now > end:
        return Finding("validity", "fail", f"expired on {end:%Y-%m-%d %H:%M} UTC")
    days = (end - now).days
    level: Level = "warn" if end - now < EXPIRY_WARNING else "pass"
    return Finding("validity", level, f"valid until {end:%Y-%m-%d} UTC ({days} days left)")


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _chain(
    leaf: x509.Certificate, intermediates: list[x509.Certificate],
    anchors: list[x509.Certificate], now: dt.datetime,
) -> Finding:
    """From the leaf through the bundle to a trust anchor, each issuer checked as a CA. Where
    several certificates could be the issuer (a renewed intermediate beside the old one), a
    valid one is taken; the first one's problem is reported when none is."""
    current, path = leaf, [leaf]
    while len(path) <= MAX_CHAIN:
        candidates = [(a, True) for a in anchors if _issued_by(current, a)]
        candidates += [(c, False) for c in intermediates
                       if c not in path and _issued_by(current, c)]
        if not candidates:
            if _issued_by(current, current):
                return Finding("chain", "fail", f"chain ends at root {_name(current.subject)}, "
                               "which is not a trusted CA (neither in tls.trusted_ca nor in "
                               "the system store): Lync will not trust it either; use a "
                               "certificate from a CA Lync trusts (an enterprise CA's root "
                               "belongs in tls.trusted_ca)")
            # A missing issuer may be an intermediate left out of the bundle or a root that
            # is simply not trusted; nothing in the certificate says which, so both are said,
            # the trust one first: advice to add intermediates misleads about a root.
            missing = _name(current.issuer)
            return Finding("chain", "fail", f"chain incomplete: missing issuer {missing}: it "
                           "is neither a trusted CA nor in the bundle. If it is your root CA, "
                           "it is not trusted: trust comes from tls.trusted_ca (add the root "
                           "CA certificate to that file; the guide's Trusted CA "
                           f"Certificates) or the system store ({SYSTEM_CA_BUNDLE}), never "
                           "from the bundle. If it is an intermediate CA, add it to the "
                           "bundle (--chain)")
        # Every CA between this issuer and the leaf counts against its pathLenConstraint.
        checked = [(c, trusted, _ca_problem(c, now, len(path) - 1)) for c, trusted in candidates]
        issuer, trusted, problem = next((c for c in checked if not c[2]), checked[0])
        if problem:
            return Finding("chain", "fail", f"issuer {_name(issuer.subject)} {problem}")
        if trusted:
            return Finding("chain", "pass", f"chain complete to trusted {_name(issuer.subject)}")
        path.append(issuer)
        current = issuer
    return Finding("chain", "fail", "chain too long or looping")


def _ca_problem(cert: x509.Certificate, now: dt.datetime, below: int) -> str:
    """Why `cert` cannot have issued a chain with `below` CA certificates under it ('' if it
    can): RFC 5280 6.1.4 (k), (l) and (n), and its dates."""
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        return "is not a CA certificate (no basicConstraints CA:TRUE): it cannot issue others"
    if constraints.path_length is not None and below > constraints.path_length:
        return (f"allows {constraints.path_length} CA certificate(s) below it "
                f"(pathLenConstraint), the chain has {below}")
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and not usage.key_cert_sign:
        return "may not sign certificates (its key usage lacks keyCertSign)"
    if now < cert.not_valid_before_utc:
        return f"is not yet valid: valid from {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
    if now > cert.not_valid_after_utc:
        return f"expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    return ""


def _eku(leaf: x509.Certificate) -> Finding:
    try:
        usages = set(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return Finding("eku", "fail", "no extended key usage: needs serverAuth and clientAuth "
                       "(the node is a TLS server and a TLS client toward Lync)")
    missing = [name for oid, name in ((ExtendedKeyUsageOID.SERVER_AUTH, "serverAuth"),
                                      (ExtendedKeyUsageOID.CLIENT_AUTH, "clientAuth"))
               if oid not in usages]
    if missing:
        return Finding("eku", "fail", f"extended key usage lacks {' and '.join(missing)}: "
                       "Lync needs both for mutual TLS")
    return Finding("eku", "pass", "extended key usage has serverAuth and clientAuth")


def _san(leaf: x509.Certificate, fqdn: str) -> Finding:
    if matches(leaf, fqdn):
        return Finding("san", "pass", f"{fqdn} is in the certificate's names")
    names = ", ".join(sip_names(leaf)) or "none"
    return Finding("san", "fail", f"SIP TLS FQDN {fqdn} is not in the certificate's SAN "
                   f"(it names: {names})")


def _wildcards(leaf: x509.Certificate) -> Finding:
    wild = wildcard_names(leaf)
    if wild:
        return Finding("wildcard", "fail", f"wildcard name(s) {', '.join(wild)}: not allowed "
                       "for SIP (RFC 5922); Lync refuses them")
    return Finding("wildcard", "pass", "no wildcard names")


def _key_strength(leaf: x509.Certificate) -> Finding:
    public = leaf.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        if public.key_size < 2048:
            return Finding("key_strength", "fail",
                           f"RSA key of {public.key_size} bits is too weak (at least 2048)")
        return Finding("key_strength", "pass", f"RSA {public.key_size} bits")
    if isinstance(public, ec.EllipticCurvePublicKey):
        if public.curve.key_size < 256:
            return Finding("key_strength", "fail",
                           f"EC key on {public.curve.name} is too weak (at least P-256)")
        return Finding("key_strength", "pass", f"ECDSA {public.curve.name}")
    return Finding("key_strength", "fail", f"unsupported key type {type(public).__name__}")


def _name(name: x509.Name) -> str:
    return name.rfc4514_string()


def report(findings: list[Finding]) -> str:
    return "\n".join(f"{f.level.upper():4}  {f.check:12}  {f.message}" for f in findings)
