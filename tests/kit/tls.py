"""TLS for transport tests: a node certificate from a throwaway CA and the client that
asks nothing of it (the tests are about connections, not trust)."""

from __future__ import annotations

import ssl
from pathlib import Path

import trustme

from gateway.transport.tls import server_context


def node_tls(tmp_path: Path) -> ssl.SSLContext:
    """The server context of a node whose certificate names gw.example.com, asking for no
    client certificate."""
    cert = trustme.CA().issue_cert("gw.example.com")
    cert_path, key_path = tmp_path / "gw.pem", tmp_path / "gw.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    return server_context(cert_path, key_path, None, False)


def client_tls() -> ssl.SSLContext:
    """A client that checks neither the chain nor the name."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx
