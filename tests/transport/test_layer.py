"""The transport layer on real loopback sockets: UDP, TCP and TLS, mutual TLS refusals and
their logged reasons, connection reuse, the connection cap and idle timeouts."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
from structlog.testing import capture_logs

from gateway.sip.errors import SipParseError
from gateway.transport.layer import UDP_RECEIVE_BUFFER, Limits, TransportLayer
from gateway.transport.peer import Peer
from gateway.transport.tls import client_context, server_context

MSG = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n"


class Inbox:
    def __init__(self) -> None:
        self.items: asyncio.Queue[tuple[bytes, Peer, SipParseError | None]] = asyncio.Queue()

    def __call__(self, data: bytes, peer: Peer, error: SipParseError | None) -> None:
        self.items.put_nowait((data, peer, error))

    async def get(self) -> tuple[bytes, Peer, SipParseError | None]:
        return await asyncio.wait_for(self.items.get(), 5)


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def files(tmp_path: Path, ca: trustme.CA, name: str, *names: str) -> tuple[Path, Path]:
    cert = ca.issue_cert(*(names or (name,)))
    cert_path, key_path = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(cert_path), append=True)
    cert.private_key_pem.write_to_path(str(key_path))
    return cert_path, key_path


@pytest.fixture
async def layer() -> AsyncIterator[tuple[TransportLayer, Inbox]]:
    inbox = Inbox()
    tl = TransportLayer(inbox)
    yield tl, inbox
    await tl.close()


async def test_udp_listener_asks_for_a_large_receive_buffer_and_logs_what_it_got(
    layer: tuple[TransportLayer, Inbox],
) -> None:
    """The kernel default (~208 KiB) overflows within one long pause of the loop at a few
    hundred calls per second."""
    tl, _ = layer
    with capture_logs() as logs:
        port = await tl.listen_udp("127.0.0.1", 0)
    [line] = [e for e in logs if e["event"] == "udp_receive_buffer"]
    assert line["port"] == port and line["asked"] == UDP_RECEIVE_BUFFER
    limit = int(Path("/proc/sys/net/core/rmem_max").read_text())
    assert line["granted"] >= min(UDP_RECEIVE_BUFFER, limit)
    assert line["granted"] > 212_992


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_udp_datagram_in_and_reply_out(
    layer: tuple[TransportLayer, Inbox], host: str
) -> None:
    tl, inbox = layer
    port = await tl.listen_udp(host, 0)
    loop = asyncio.get_running_loop()
    got: asyncio.Future[bytes] = loop.create_future()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            got.set_result(data)

    transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=(host, port))
    transport.sendto(MSG)
    data, peer, error = await inbox.get()
    assert data == MSG and peer.transport == "UDP" and error is None
    tl.send(b"reply", peer)
    assert await asyncio.wait_for(got, 5) == b"reply"
    transport.close()


async def test_udp_keep_alives_are_absorbed_and_the_next_message_gets_through(
    layer: tuple[TransportLayer, Inbox]
) -> None:
    """RFC 5626 CRLF keep-alives (and a lone CR or LF, as some phones send) reach no parser:
    the first datagram the SIP layer sees is the message after them."""
    tl, inbox = layer
    port = await tl.listen_udp("127.0.0.1", 0)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, remote_addr=("127.0.0.1", port))
    for ping in (b"\r\n\r\n", b"\r\n", b"\n", b"\n\r\n", b""):
        transport.sendto(ping)
    transport.sendto(MSG)
    data, _, _ = await inbox.get()
    assert data == MSG and inbox.items.empty()
    transport.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_tcp_reply_reuses_the_inbound_connection(
    layer: tuple[TransportLayer, Inbox], host: str
) -> None:
    tl, inbox = layer
    port = await tl.listen_tcp(host, 0)
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(MSG + b"\r\n\r\n")
    _data, peer, _ = await inbox.get()
    assert peer.transport == "TCP" and peer.connection is not None
    assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"  # pong
    tl.send(b"SIP/2.0 200 OK\r\n\r\n", peer)
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == b"SIP/2.0 200 OK\r\n\r\n"
    # A peer without the connection id still finds the open connection by address.
    tl.send(b"again", Peer("TCP", peer.host, peer.port))
    assert await asyncio.wait_for(reader.readexactly(5), 5) == b"again"
    assert tl.connection_count == 1
    writer.close()


async def test_tcp_framing_error_is_reported_and_connection_closed(
    layer: tuple[TransportLayer, Inbox],
) -> None:
    tl, inbox = layer
    port = await tl.listen_tcp("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\n")
    _, _, error = await inbox.get()
    assert error is not None and error.status_hint == 400
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the layer
    writer.close()


async def test_connection_cap_refuses_extra_connections() -> None:
    inbox = Inbox()
    tl = TransportLayer(inbox, limits=Limits(max_connections=1))
    port = await tl.listen_tcp("127.0.0.1", 0)
    _, w1 = await asyncio.open_connection("127.0.0.1", port)
    w1.write(MSG)
    await inbox.get()
    r2, w2 = await asyncio.open_connection("127.0.0.1", port)
    assert await asyncio.wait_for(r2.read(), 5) == b""
    assert tl.stats.connections_refused == 1
    w1.close()
    w2.close()
    await tl.close()


async def test_idle_connections_are_closed() -> None:
    tl = TransportLayer(Inbox(), limits=Limits(idle_timeout=0.3))
    port = await tl.listen_tcp("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    await tl.close()


async def test_outbound_tcp_connection_is_opened_and_queued_data_delivered() -> None:
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.put_nowait(await reader.readexactly(len(MSG) * 2))
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    tl = TransportLayer(Inbox())
    tl.send(MSG, Peer("TCP", "127.0.0.1", port))
    tl.send(MSG, Peer("TCP", "127.0.0.1", port))  # while connecting: queued, one connection
    assert await asyncio.wait_for(received.get(), 5) == MSG * 2
    server.close()
    await tl.close()


async def test_unreachable_peer_is_reported() -> None:
    failures: list[tuple[Peer, str]] = []
    tl = TransportLayer(Inbox(), on_unreachable=lambda p, r: failures.append((p, r)))
    tl.send(MSG, Peer("TCP", "127.0.0.1", 9))
    for _ in range(50):
        if failures:
            break
        await asyncio.sleep(0.05)
    assert failures and failures[0][0].port == 9
    await tl.close()


# -- TLS ------------------------------------------------------------------------------------
async def tls_layer(
    tmp_path: Path, ca: trustme.CA, verify: bool
) -> tuple[TransportLayer, Inbox, int]:
    cert, key = files(tmp_path, ca, "gw.example.com")
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    inbox = Inbox()
    tl = TransportLayer(inbox, server_tls=server_context(cert, key, ca_path, verify))
    port = await tl.listen_tls("127.0.0.1", 0)
    return tl, inbox, port


async def test_mutual_tls_accepts_a_trusted_client(tmp_path: Path, ca: trustme.CA) -> None:
    tl, inbox, port = await tls_layer(tmp_path, ca, verify=True)
    client_cert, client_key = files(tmp_path, ca, "fepool.example.com")
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    ctx.load_cert_chain(client_cert, client_key)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="gw.example.com"
    )
    writer.write(MSG)
    data, peer, _ = await inbox.get()
    assert data == MSG and peer.transport == "TLS"
    tl.send(b"pong", peer)
    assert await asyncio.wait_for(reader.readexactly(4), 5) == b"pong"
    assert tl.stats.tls_handshakes == 1
    writer.close()
    await tl.close()


@pytest.mark.parametrize("client", ["no certificate", "untrusted CA"])
async def test_mutual_tls_refuses_untrusted_clients_and_logs_why(
    tmp_path: Path, ca: trustme.CA, client: str
) -> None:
    tl, inbox, port = await tls_layer(tmp_path, ca, verify=True)
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    if client == "untrusted CA":
        other = trustme.CA()
        cert, key = files(tmp_path, other, "rogue.example.com")
        ctx.load_cert_chain(cert, key)
    with capture_logs() as logged:
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=ctx, server_hostname="gw.example.com"
            )
            writer.write(MSG)
            await asyncio.wait_for(reader.read(), 5)  # TLS 1.3 reports refusal after the fact
            writer.close()
        except (ssl.SSLError, ConnectionError):
            pass
        for _ in range(50):
            if tl.stats.tls_failures:
                break
            await asyncio.sleep(0.05)
    assert inbox.items.empty()
    expected = "no client certificate" if client == "no certificate" else "unknown CA"
    assert tl.stats.tls_failures == {expected: 1}
    failures = [e for e in logged if e["event"] == "tls_handshake_failed"]
    assert [e["reason"] for e in failures] == [expected]
    await tl.close()


async def test_tls_client_presents_node_certificate_and_checks_rfc5922_name(
    tmp_path: Path, ca: trustme.CA
) -> None:
    server_tl, inbox, port = await tls_layer(tmp_path, ca, verify=True)
    ca_path = tmp_path / "ca.pem"
    node_cert, node_key = files(tmp_path, ca, "conf01.example.com")
    client = TransportLayer(Inbox(), client_tls=client_context(node_cert, node_key, ca_path, True))
    client.send(MSG, Peer("TLS", "127.0.0.1", port))
    # The server names gw.example.com, not 127.0.0.1: RFC 5922 says refuse.
    for _ in range(100):
        if client.stats.tls_failures:
            break
        await asyncio.sleep(0.05)
    assert list(client.stats.tls_failures) and inbox.items.empty()
    await client.close()
    await server_tl.close()


async def test_tls_client_checks_the_name_the_peer_was_found_under(
    tmp_path: Path, ca: trustme.CA
) -> None:
    """A peer reached by address but found under a name (RFC 3263's target host) is checked
    against that name: the certificate naming it is accepted and the message delivered."""
    server_tl, inbox, port = await tls_layer(tmp_path, ca, verify=True)
    node_cert, node_key = files(tmp_path, ca, "conf01.example.com")
    client = TransportLayer(Inbox(), client_tls=client_context(
        node_cert, node_key, tmp_path / "ca.pem", True))
    client.send(MSG, Peer("TLS", "127.0.0.1", port, server_name="gw.example.com"))
    data, _, _ = await inbox.get()
    assert data == MSG and not client.stats.tls_failures
    await client.close()
    await server_tl.close()


async def test_tls_client_refuses_wildcard_server_certificate(
    tmp_path: Path, ca: trustme.CA
) -> None:
    cert, key = files(tmp_path, ca, "wild", "*.example.com", "127.0.0.1")
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    server = TransportLayer(Inbox(), server_tls=server_context(cert, key, None, False))
    port = await server.listen_tls("127.0.0.1", 0)
    failures: list[str] = []
    client = TransportLayer(Inbox(), client_tls=client_context(None, None, ca_path, True),
                            on_unreachable=lambda p, r: failures.append(r))
    client._pending.clear()
    await client._connect(Peer("TLS", "127.0.0.1", port), server_name="sip.example.com")
    assert failures and "sip.example.com" in failures[0]
    await client.close()
    await server.close()
