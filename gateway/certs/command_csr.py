"""`lyncgate csr`: a private key and a certificate signing request for the node (or a pool),
the reference guide's CSR generator on the command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.certs.csr import (
    KEY_TYPES,
    PrivateKey,
    Subject,
    build_csr,
    check_dns_name,
    load_key,
    new_key,
    refuse_existing_key,
    san_names,
    write_pem,
    write_private_key,
)
from gateway.certs.errors import CertificateError
from gateway.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, usage_error
from gateway.config.load import load_for_command
from gateway.daemon.state import state_dir

PROG = "lyncgate csr"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML config (default: embedded)")
    parser.add_argument("--cn", help="subject common name (default: node.sip_tls_fqdn)")
    parser.add_argument("--fqdn", action="append", default=[], metavar="NAME",
                        help="a SAN entry: every node FQDN of the pool, the pool name; repeat")
    parser.add_argument("--no-cn-in-san", action="store_true",
                        help="do not add the common name to the SANs")
    parser.add_argument("--key-type", choices=KEY_TYPES, default="rsa2048",
                        help="the new key's type (default: rsa2048)")
    parser.add_argument("--key", metavar="FILE", type=Path,
                        help="use this existing private key instead of making one")
    parser.add_argument("--org", default="", help="organization name (O)")
    parser.add_argument("--ou", default="", help="department (OU)")
    parser.add_argument("--locality", default="", help="city (L)")
    parser.add_argument("--state", default="", help="state or province (ST)")
    parser.add_argument("--country", default="", help="two-letter country code (C)")
    parser.add_argument("--ms-template", action="store_true",
                        help="add Microsoft's certificate template extension (WebServer)")
    parser.add_argument("--out-key", type=Path, metavar="FILE",
                        help="where to write a new key (default: [tls] private_key, else the "
                        "state directory)")
    parser.add_argument("--out-csr", type=Path, metavar="FILE",
                        help="where to write the CSR (default: beside the key, .csr)")
    parser.add_argument("--force", action="store_true", help="replace an existing key file")


def run(args: argparse.Namespace) -> int:
    config = load_for_command(args.config, check_files=False)  # the key may not exist yet
    if config is None:
        return EXIT_USAGE
    cn = args.cn or config.node.sip_tls_fqdn
    key_path = args.key or args.out_key or config.tls.private_key or (
        state_dir(config.node) / "tls" / f"{cn}.key")
    csr_path = args.out_csr or key_path.with_suffix(".csr")
    # Everything is checked before anything is written: a refused run must leave no key
    # behind, or the corrected run would be refused for the key it left.
    try:
        check_dns_name(cn.strip().rstrip(".").lower(), "common name")
        names = san_names(cn, args.fqdn, include_cn=not args.no_cn_in_san)
        subject = Subject(cn, args.org, args.ou, args.locality, args.state, args.country).name()
        given: PrivateKey | None = None if args.key is None else load_key(args.key)
    except CertificateError as exc:
        return usage_error(PROG, str(exc))
    try:
        if given is None:
            refuse_existing_key(key_path, force=args.force)
            key = new_key(args.key_type)
        else:
            key = given
        csr = build_csr(key, subject, names, template="WebServer" if args.ms_template else None)
        if given is None:
            write_private_key(key, key_path, force=args.force)
        write_pem(csr.public_bytes(serialization.Encoding.PEM), csr_path)
    except (CertificateError, OSError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"private key: {key_path} (keep it here; it never leaves this machine)")
    print(f"CSR:         {csr_path}")
    print(f"subject:     {describe(subject)}")
    print(f"SANs:        {', '.join(names)}")
    print("usage:       serverAuth, clientAuth"
          + ("; Microsoft template WebServer" if args.ms_template else ""))
    in_config = (args.config is not None and config.tls.private_key is not None
                 and config.tls.private_key.resolve() == key_path.resolve())
    print(next_steps(csr_path, key_path, args.config, in_config))
    return EXIT_OK


def describe(subject: x509.Name) -> str:
    """The subject in the order it was asked for (CN first), every field written."""
    return ", ".join(f"{attr.rfc4514_attribute_name}={attr.value!s}" for attr in subject
                     if isinstance(attr.value, str))


def next_steps(csr: Path, key: Path, config: str | None, in_config: bool) -> str:
    """`cert import` installs where the config's [tls] section points, and finds the key
    there: say so, or the operator's next command is refused for want of it."""
    file = config or "FILE"
    command = f"lyncgate cert import SIGNED.pem --chain BUNDLE.pem --config {file}"
    if in_config:
        return (f"next:        have your CA sign {csr}, then\n"
                f"             {command}")
    return (f"next:        have your CA sign {csr}; in the config's [tls] section set\n"
            f"               certificate = \"<where the signed certificate goes>\"\n"
            f"               private_key = \"{key.resolve()}\"\n"
            f"             then {command}")
