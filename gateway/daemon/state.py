"""The daemon's state directory and what it keeps there across restarts.

The state directory holds what must survive a restart: the self-signed certificate of a node
that has none configured, SQLite files (registrations, CDRs) in later work.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.certs.csr import write_pem, write_private_key
from gateway.config.schema import NodeConfig

SELF_SIGNED_DAYS = 365
# Renew a generated certificate this long before it expires, at start-up.
RENEW_BEFORE = dt.timedelta(days=30)


class StateDirError(OSError):
    """The state directory cannot be made or written: said with the directory and the setting
    that moves it, so it does not read as a port or certificate problem."""

    def __init__(self, directory: Path, exc: OSError) -> None:
        self.directory = directory
        self.reason = exc.strerror or str(exc)
        self.advice = (f"the state directory {directory} must be writable by this user (uid "
                       f"{os.geteuid()}); set node.state_dir in the config to one that is")
        super().__init__(exc.errno, f"state directory {directory}: {self.reason}; "
                         f"{self.advice}")


def prepare_state_dir(node: NodeConfig) -> Path:
    """The state directory, made if missing and proven writable, before anything needs it."""
    directory = state_dir(node)
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        probe = directory / f".write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise StateDirError(directory, exc) from exc
    return directory


def state_dir(node: NodeConfig) -> Path:
    """`node.state_dir`, else systemd's $STATE_DIRECTORY, else the FHS or XDG default."""
    if node.state_dir:
        return Path(node.state_dir)
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    if os.geteuid() == 0:
        return Path("/var/lib/lyncgate")
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "lyncgate"


@dataclass(frozen=True, slots=True)
class SelfSigned:
    certificate: Path
    private_key: Path
    created: bool


def ensure_self_signed(directory: Path, node: NodeConfig, now: dt.datetime) -> SelfSigned:
    """A self-signed certificate for `node`, created (or renewed) when missing or stale.

    Its names cover the node's SIP TLS FQDN and listening address, with both serverAuth and
    clientAuth, so the same file works for inbound and outbound TLS in a lab. Peers that verify
    will not trust it: a real deployment imports a CA-signed certificate (`lyncgate cert`).
    """
    tls_dir = directory / "tls"
    cert_path = tls_dir / "self-signed.pem"
    key_path = tls_dir / "self-signed.key"
    if _still_good(cert_path, key_path, node, now):
        return SelfSigned(cert_path, key_path, created=False)
    try:
        tls_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise StateDirError(directory, exc) from exc
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(node.sip_tls_fqdn)]
    names.append(x509.IPAddress(ipaddress.ip_address(node.address)))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node.sip_tls_fqdn)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=SELF_SIGNED_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    try:
        write_private_key(key, key_path, force=True)
        write_pem(cert.public_bytes(serialization.Encoding.PEM), cert_path)
    except OSError as exc:
        raise StateDirError(directory, exc) from exc
    return SelfSigned(cert_path, key_path, created=True)


def _still_good(cert_path: Path, key_path: Path, node: NodeConfig, now: dt.datetime) -> bool:
    if not (cert_path.exists() and key_path.exists()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    names = san.get_values_for_type(x509.DNSName)
    addresses = [str(a) for a in san.get_values_for_type(x509.IPAddress)]
    return (
        node.sip_tls_fqdn in names
        and node.address in addresses
        and cert.not_valid_after_utc - RENEW_BEFORE > now
    )
