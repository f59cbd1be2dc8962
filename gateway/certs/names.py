"""Which names a certificate stands for in SIP (RFC 5922 section 7.1).

SIP identity comes from subjectAltName: URI entries of scheme sip, then dNSName entries; the
subject CN is used only when the certificate has no SAN at all. Wildcards never match in SIP,
which is why a wildcard certificate fails a Lync trusted-application check.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import NameOID


def sip_names(cert: x509.Certificate) -> list[str]:
    """Names (lower-case, no trailing dot) the certificate asserts, in certificate order."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [
            _normalise(str(attr.value))
            for attr in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        ]
    names: list[str] = []
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.lower().startswith("sip:"):
            names.append(_normalise(uri[4:].split(";", 1)[0].rsplit("@", 1)[-1]))
    names.extend(_normalise(name) for name in san.get_values_for_type(x509.DNSName))
    return names


def wildcard_names(cert: x509.Certificate) -> list[str]:
    return [name for name in sip_names(cert) if "*" in name]


def matches(cert: x509.Certificate, fqdn: str) -> bool:
    """Exact, case-insensitive match of `fqdn` against the certificate's SIP names."""
    wanted = _normalise(fqdn)
    return any(name == wanted for name in sip_names(cert) if "*" not in name)


def _normalise(name: str) -> str:
    return name.strip().rstrip(".").lower()
