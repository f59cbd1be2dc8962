"""How TLS failure reasons read in the log and in what the layer reports."""

from __future__ import annotations

import ssl
from pathlib import Path

import trustme
from structlog.testing import capture_logs

from gateway.transport.layer import TransportLayer
from gateway.transport.peer import Peer
from gateway.transport.tls import client_context, failure_reason, server_context


def _pem(tmp_path: Path, ca: trustme.CA, *names: str) -> tuple[Path, Path]:
    cert = ca.issue_cert(*names)
    cert_path, key_path = tmp_path / f"{names[0]}.pem", tmp_path / f"{names[0]}.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    return cert_path, key_path


def test_a_reason_without_openssl_words_is_its_message_not_a_tuple() -> None:
    """An SSLError the gateway raises itself reads as its message."""
    reason = failure_reason(ssl.SSLError("certificate does not name 127.0.0.1 (RFC 5922)"))
    assert reason == "certificate does not name 127.0.0.1 (RFC 5922)"


async def test_server_certificate_naming_someone_else_is_logged_in_plain_words(
    tmp_path: Path,
) -> None:
    """The RFC 5922 refusal is logged, counted and reported as the sentence itself,
    `reason="certificate does not name 127.0.0.1 (RFC 5922)"`, not as a Python tuple."""
    ca = trustme.CA()
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    cert, key = _pem(tmp_path, ca, "gw.example.com")
    server = TransportLayer(lambda *_: None, server_tls=server_context(cert, key, None, False))
    port = await server.listen_tls("127.0.0.1", 0)
    reported: list[str] = []
    client = TransportLayer(lambda *_: None,
                            client_tls=client_context(None, None, ca_path, True),
                            on_unreachable=lambda _, reason: reported.append(reason))
    expected = "certificate does not name 127.0.0.1 (RFC 5922)"
    with capture_logs() as logged:
        await client._connect(Peer("TLS", "127.0.0.1", port))
    assert reported == [expected]
    assert client.stats.tls_failures == {expected: 1}
    assert [e["reason"] for e in logged if e["event"] == "connect_failed"] == [expected]
    await client.close()
    await server.close()
