"""`lyncgate cert import|check`: a signed certificate checked against its key, chain, names
and usages, and installed where `[tls]` points; or the installed one checked."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.certs.check import (
    Finding,
    check_certificate,
    load_certificates,
    report,
    trust_store,
)
from gateway.certs.csr import PrivateKey, load_key, write_pem, write_private_key
from gateway.certs.errors import CertificateError
from gateway.config.load import load_for_command
from gateway.config.schema import Config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    imp = sub.add_parser("import", help="check a signed certificate and install it")
    imp.add_argument("certificate", type=Path, help="the signed certificate (PEM)")
    imp.add_argument("--chain", type=Path, metavar="FILE",
                     help="intermediate CA certificates (PEM bundle)")
    imp.add_argument("--key", type=Path, metavar="FILE",
                     help="the CSR's private key (default: [tls] private_key)")
    check = sub.add_parser("check", help="check the installed certificate; exit 1 on failure")
    for p in (imp, check):
        p.add_argument("--config", metavar="FILE", help="TOML config (default: embedded)")
        p.add_argument("--fqdn", action="append", default=[], metavar="NAME",
                       help="another name the certificate must carry (pool name); repeat")


def run(args: argparse.Namespace) -> int:
    # The [tls] files are what import writes and check examines, each failure in its words.
    config = load_for_command(args.config, check_files=False)
    if config is None:
        return 2
    try:
        return _import(args, config) if args.action == "import" else _check(args, config)
    except (CertificateError, OSError) as exc:
        print(f"lyncgate cert {args.action}: {exc}", file=sys.stderr)
        return 1


def _import(args: argparse.Namespace, config: Config) -> int:
    cert_path, key_path = config.tls.certificate, config.tls.private_key
    if cert_path is None or key_path is None:
        raise CertificateError("set [tls] certificate and private_key in the config: they say "
                               "where the certificate is installed")
    given = load_certificates(args.certificate)
    leaf, extra = given[0], given[1:]
    chain = extra + (load_certificates(args.chain) if args.chain else [])
    key_file = args.key or key_path
    key = load_key(key_file)
    findings = _findings(config, args.fqdn, leaf, chain, key)
    print(report(findings))
    if any(f.level == "fail" for f in findings):
        print(f"not installed: {args.certificate} fails the checks above", file=sys.stderr)
        return 1
    # Roots stay out of the installed chain: peers must already trust them.
    sent = [c for c in chain if c.issuer != c.subject]
    write_pem(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in [leaf, *sent]),
              cert_path)
    if key_file.resolve() != key_path.resolve():
        write_private_key(key, key_path, force=True)
    print(f"installed: {cert_path} (certificate + {len(sent)} intermediate(s)), key {key_path}")
    print("the running daemon uses it after `kill -HUP` (or a restart)")
    return 0


def _check(args: argparse.Namespace, config: Config) -> int:
    cert_path, key_path = config.tls.certificate, config.tls.private_key
    if cert_path is None or key_path is None:
        raise CertificateError("no [tls] certificate configured: the daemon uses a self-signed "
                               "one, which Lync will not trust")
    certs = load_certificates(cert_path)
    findings = _findings(config, args.fqdn, certs[0], certs[1:], load_key(key_path))
    print(f"{cert_path}: {_describe(certs[0])}")
    print(report(findings))
    return 1 if any(f.level == "fail" for f in findings) else 0


def _findings(config: Config, extra_names: list[str], leaf: x509.Certificate,
              chain: list[x509.Certificate], key: PrivateKey) -> list[Finding]:
    """The node's SIP TLS FQDN and any extra (pool) names must be in the certificate."""
    return check_certificate(leaf, chain, key, [config.node.sip_tls_fqdn, *extra_names],
                             dt.datetime.now(dt.UTC), trust_store(config.tls.trusted_ca))


def _describe(cert: x509.Certificate) -> str:
    return f"subject {cert.subject.rfc4514_string()}, issuer {cert.issuer.rfc4514_string()}"
