"""TLS contexts for SIP: mutual TLS toward Lync, RFC 5922 server identity, failure reasons.

Python's hostname check accepts wildcards, which SIP forbids (RFC 5922 7.2), so the client
context checks chains only and `peer_name_ok` checks the name after the handshake.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from cryptography import x509

from gateway.certs.names import matches

# OpenSSL reasons and verify messages, in the words operators find in the reference guide's
# troubleshooting and in Lync's own logs.
_REASONS = {
    "TLSV1_ALERT_UNKNOWN_CA": "unknown CA",
    "SSLV3_ALERT_BAD_CERTIFICATE": "bad certificate",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "certificate expired",
    "TLSV1_ALERT_ACCESS_DENIED": "access denied",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "no client certificate",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "no client certificate",
    "WRONG_VERSION_NUMBER": "not TLS (plain SIP on the TLS port?)",
    "HTTP_REQUEST": "not TLS (HTTP on the TLS port)",
    "UNSUPPORTED_PROTOCOL": "unsupported TLS version",
    "NO_SHARED_CIPHER": "no shared cipher",
    "TLSV1_ALERT_PROTOCOL_VERSION": "unsupported TLS version",
    "UNEXPECTED_EOF_WHILE_READING": "connection closed during handshake",
}
_VERIFY = {
    2: "unknown CA",  # unable to get issuer certificate
    18: "unknown CA",  # self-signed certificate
    19: "unknown CA",  # self-signed certificate in chain
    20: "unknown CA",  # unable to get local issuer certificate
    21: "unknown CA",  # unable to verify the first certificate
    9: "certificate not yet valid",
    10: "certificate expired",
    26: "certificate not for this purpose (extended key usage)",
}


def failure_reason(exc: BaseException) -> str:
    """A short, operator-facing reason for a failed handshake."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = getattr(exc, "verify_code", 0)
        return _VERIFY.get(code, getattr(exc, "verify_message", "") or "certificate rejected")
    if isinstance(exc, ssl.SSLError):
        reason = getattr(exc, "reason", None) or ""
        return _REASONS.get(reason, reason.lower().replace("_", " ") or _message(exc))
    if isinstance(exc, TimeoutError):
        return "handshake timed out"
    if isinstance(exc, ConnectionError | EOFError):
        return "connection closed during handshake"
    return type(exc).__name__


def _message(exc: OSError) -> str:
    """The words of an SSLError without an OpenSSL reason (ours, e.g. an RFC 5922 name
    mismatch): str() of a one-argument OSError is the argument tuple, not the message."""
    return exc.strerror or " ".join(str(arg) for arg in exc.args) or type(exc).__name__


def server_context(
    certificate: Path, private_key: Path, trusted_ca: Path | None, verify: bool
) -> ssl.SSLContext:
    """Server side: present the node certificate; with `verify`, require a client certificate
    chaining to `trusted_ca` (Lync pool certificates), else ask for one but accept none."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certificate, private_key)
    if trusted_ca is not None:
        ctx.load_verify_locations(cafile=str(trusted_ca))
    ctx.verify_mode = ssl.CERT_REQUIRED if verify else ssl.CERT_NONE
    return ctx


def client_context(
    certificate: Path | None, private_key: Path | None, trusted_ca: Path | None, verify: bool
) -> ssl.SSLContext:
    """Client side: present the node certificate (Lync wants mutual TLS both ways); with
    `verify`, require a chain to `trusted_ca` (or the system store)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False  # RFC 5922 name check is ours: see peer_name_ok
    if certificate is not None and private_key is not None:
        ctx.load_cert_chain(certificate, private_key)
    if verify:
        ctx.verify_mode = ssl.CERT_REQUIRED
        if trusted_ca is not None:
            ctx.load_verify_locations(cafile=str(trusted_ca))
        else:
            ctx.load_default_certs()
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def peer_name_ok(der: bytes | None, expected: str) -> bool:
    """RFC 5922: the server certificate must name `expected` exactly, without wildcards."""
    if der is None:
        return False
    return matches(x509.load_der_x509_certificate(der), expected)
