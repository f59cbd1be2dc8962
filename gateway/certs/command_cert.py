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
from gateway.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, usage_error
from gateway.config.load import load_for_command
from gateway.config.schema import Config


class UsageError(CertificateError):
    """A file named on the command line or a config that cannot serve the action: exit 2."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    imp = sub.add_parser(
        "import", help="check a signed certificate and install it",
        description="Check a CA-signed certificate against its private key, its chain (which "
        "must end at a CA in tls.trusted_ca or the system store), its names and usages, then "
        "install it with its intermediates where [tls] certificate points (the key where "
        "[tls] private_key points). Nothing is written when a check fails. Exit 0 installed, "
        "1 a check failed, 2 a wrong argument or config.")
    imp.add_argument("certificate", type=Path, help="the signed certificate (PEM)")
    imp.add_argument("--chain", type=Path, metavar="FILE",
                     help="intermediate CA certificates (PEM bundle)")
    imp.add_argument("--key", type=Path, metavar="FILE",
                     help="the CSR's private key (default: [tls] private_key)")
    check = sub.add_parser(
        "check", help="check the installed certificate; exit 1 on failure",
        description="Check the certificate installed where [tls] certificate points, as "
        "import does: key pair, dates, chain to a trusted CA, names (node.sip_tls_fqdn and "
        "any --fqdn) and usages. Exit 0 all pass, 1 a check failed, 2 a wrong argument or "
        "config.")
    for p in (imp, check):
        p.add_argument("--config", metavar="FILE", help="TOML config (default: embedded)")
        p.add_argument("--fqdn", action="append", default=[], metavar="NAME",
                       help="another name the certificate must carry (pool name); repeat")


def run(args: argparse.Namespace) -> int:
    # The [tls] files are what import writes and check examines, each failure in its words.
    config = load_for_command(args.config, check_files=False)
    if config is None:
        return EXIT_USAGE
    prog = f"lyncgate cert {args.action}"
    try:
        return _import(args, config) if args.action == "import" else _check(args, config)
    except UsageError as exc:
        return usage_error(prog, str(exc))
    except (CertificateError, OSError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _import(args: argparse.Namespace, config: Config) -> int:
    cert_path, key_path = config.tls.certificate, config.tls.private_key
    if cert_path is None or key_path is None:
        raise UsageError("set [tls] certificate and private_key in the config (--config "
                         "FILE): they say where the certificate is installed")
    key_file = args.key or key_path
    try:
        given = load_certificates(args.certificate)
        chain = given[1:] + (load_certificates(args.chain) if args.chain else [])
        key = load_key(key_file)
    except CertificateError as exc:
        raise UsageError(str(exc)) from exc
    leaf = given[0]
    findings = _findings(config, args.fqdn, leaf, chain, key)
    print(report(findings))
    if any(f.level == "fail" for f in findings):
        print(f"not installed: {args.certificate} fails the checks above", file=sys.stderr)
        return EXIT_FAILED
    # Roots stay out of the installed chain: peers must already trust them.
    sent = [c for c in chain if c.issuer != c.subject]
    write_pem(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in [leaf, *sent]),
              cert_path)
    if key_file.resolve() != key_path.resolve():
        write_private_key(key, key_path, force=True)
    print(f"installed: {cert_path} (certificate + {len(sent)} intermediate(s)), key {key_path}")
    print("the running daemon uses it after `kill -HUP` (or a restart)")
    return EXIT_OK


def _check(args: argparse.Namespace, config: Config) -> int:
    cert_path, key_path = config.tls.certificate, config.tls.private_key
    if cert_path is None or key_path is None:
        raise CertificateError("no [tls] certificate configured: the daemon uses a self-signed "
                               "one, which Lync will not trust")
    certs = load_certificates(cert_path)
    findings = _findings(config, args.fqdn, certs[0], certs[1:], load_key(key_path))
    print(f"{cert_path}: {_describe(certs[0])}")
    print(report(findings))
    return EXIT_FAILED if any(f.level == "fail" for f in findings) else EXIT_OK


def _findings(config: Config, extra_names: list[str], leaf: x509.Certificate,
              chain: list[x509.Certificate], key: PrivateKey) -> list[Finding]:
    """The node's SIP TLS FQDN and any extra (pool) names must be in the certificate."""
    return check_certificate(leaf, chain, key, [config.node.sip_tls_fqdn, *extra_names],
                             dt.datetime.now(dt.UTC), trust_store(config.tls.trusted_ca))


def _describe(cert: x509.Certificate) -> str:
    return f"subject {cert.subject.rfc4514_string()}, issuer {cert.issuer.rfc4514_string()}"
