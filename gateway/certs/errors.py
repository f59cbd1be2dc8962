"""Errors of the certificates package."""

from __future__ import annotations


class CertificateError(Exception):
    """A key, CSR or certificate operation that cannot be done; the message says why."""
