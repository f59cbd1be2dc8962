"""Accepted TLS connections on their own sockets (`gateway.transport.tls_stream`): what the
kernel does not take waits and goes in order, a peer that does not read is dropped past the
write limit, the connection cap and failed accepts, listeners on IPv4 and IPv6. Run on
asyncio and uvloop (conftest)."""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.transport import layer as layer_module
from gateway.transport.errors import FramingError
from gateway.transport.layer import Connection, Limits, TransportLayer
from gateway.transport.peer import Peer
from gateway.transport.tls_stream import READS_A_TURN, TlsStream
from tests.kit.tls import client_tls, node_tls

PING = b"\r\n\r\n"
MESSAGE = (b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:9;branch=z9hG4bK1\r\n"
           b"Content-Length: 0\r\n\r\n")


class Inbox:
    def __init__(self) -> None:
        self.items: asyncio.Queue[Peer] = asyncio.Queue()

    def __call__(self, data: bytes, peer: Peer, error: FramingError | None) -> None:
        self.items.put_nowait(peer)

    async def get(self) -> Peer:
        return await asyncio.wait_for(self.items.get(), 5)


async def tls_layer(tmp_path: Path, limits: Limits, host: str = "127.0.0.1"
                    ) -> tuple[TransportLayer, Inbox, int]:
    inbox = Inbox()
    tl = TransportLayer(inbox, limits=limits, server_tls=node_tls(tmp_path))
    return tl, inbox, await tl.listen_tls(host, 0)


async def open_tls(host: str, port: int, limit: int = 1 << 24
                   ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client; its reader stops reading from the socket past twice `limit` unread."""
    return await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=client_tls(), limit=limit), 5)


async def test_what_the_socket_does_not_take_reaches_a_slow_reader_whole_and_in_order(
    tmp_path: Path,
) -> None:
    """4 MiB written at once toward a peer that reads only later: most of it waits in the
    stream (OpenSSL refuses the write, to be repeated with the same bytes) and all of it
    arrives, in order, once the peer reads."""
    tl, inbox, port = await tls_layer(tmp_path, Limits(max_write_buffer=16 << 20))
    reader, writer = await open_tls("127.0.0.1", port)
    writer.write(MESSAGE)
    peer = await inbox.get()
    chunks = [bytes([i % 251]) * 65536 for i in range(64)]
    for chunk in chunks:
        tl.send(chunk, peer)
    await asyncio.sleep(0.3)
    received = await asyncio.wait_for(reader.readexactly(len(chunks) * 65536), 10)
    assert received == b"".join(chunks)
    assert tl.connection_count == 1
    writer.close()
    await tl.close()


async def test_a_peer_that_does_not_read_is_dropped_past_the_write_limit(
    tmp_path: Path,
) -> None:
    """Past `max_write_buffer` waiting, the connection is aborted and forgotten, not
    buffered without bound."""
    tl, inbox, port = await tls_layer(tmp_path, Limits(max_write_buffer=256 * 1024))
    _reader, writer = await open_tls("127.0.0.1", port)
    writer.write(MESSAGE)
    peer = await inbox.get()
    with capture_logs() as logged:
        for _ in range(200):  # 12.5 MiB, far beyond what the kernel buffers
            tl.send(b"x" * 65536, peer)
            if tl.connection_count == 0:
                break
        for _ in range(100):
            if tl.connection_count == 0:
                break
            await asyncio.sleep(0.01)
    assert tl.connection_count == 0
    assert [e["event"] for e in logged].count("connection_write_overflow") == 1
    writer.close()
    await tl.close()


async def test_the_connection_cap_refuses_tls_connections_before_their_handshake(
    tmp_path: Path,
) -> None:
    """One connection allowed: the second is closed at accept, its handshake never run."""
    tl, inbox, port = await tls_layer(tmp_path, Limits(max_connections=1))
    _reader, writer = await open_tls("127.0.0.1", port)
    writer.write(MESSAGE)
    await inbox.get()
    with pytest.raises((ssl.SSLError, ConnectionError, TimeoutError)):
        await open_tls("127.0.0.1", port)
    assert tl.stats.connections_refused == 1
    assert tl.stats.tls_handshakes == 1
    writer.close()
    await tl.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_a_tls_listener_serves_its_address_family(tmp_path: Path, host: str) -> None:
    """The listener's own socket is bound as create_server would bind it, IPv6 included;
    the peer is named by the address it came from."""
    tl, inbox, port = await tls_layer(tmp_path, Limits(), host)
    assert tl.listening == [("TLS", host, port)]
    reader, writer = await open_tls(host, port)
    writer.write(PING)
    assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"
    writer.write(MESSAGE)
    peer = await inbox.get()
    assert (peer.transport, peer.host) == ("TLS", host)
    writer.close()
    await tl.close()


async def test_an_accept_that_fails_for_want_of_descriptors_is_tried_again_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """EMFILE at accept: logged, the listener left alone for ACCEPT_RETRY_S (the waiting
    connection would otherwise make the loop call accept on every turn), then the
    connection is accepted."""
    monkeypatch.setattr(layer_module, "ACCEPT_RETRY_S", 0.3)
    real_accept = socket.socket.accept
    calls: list[float] = []

    def accept(sock: socket.socket) -> Any:
        calls.append(asyncio.get_running_loop().time())
        if len(calls) == 1:
            raise OSError(errno.EMFILE, "Too many open files")
        return real_accept(sock)

    tl, inbox, port = await tls_layer(tmp_path, Limits())
    monkeypatch.setattr(socket.socket, "accept", accept)
    with capture_logs() as logged:
        _reader, writer = await open_tls("127.0.0.1", port)
    writer.write(MESSAGE)
    await inbox.get()
    assert [e["event"] for e in logged].count("accept_failed") == 1
    assert calls[1] - calls[0] >= 0.25  # not a busy loop meanwhile
    writer.close()
    await tl.close()


async def test_a_client_gone_during_its_handshake_is_logged_in_plain_words(
    tmp_path: Path,
) -> None:
    """Closed before or halfway through its ClientHello: OpenSSL's "unexpected EOF" is
    logged as the connection closed during the handshake, and the connection forgotten."""
    tl, _, port = await tls_layer(tmp_path, Limits())
    with capture_logs() as logged:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"\x16\x03\x01\x02\x00\x01")  # the start of a ClientHello
        await asyncio.sleep(0.05)
        writer.close()
        for _ in range(100):
            if sum(tl.stats.tls_failures.values()) == 2:
                break
            await asyncio.sleep(0.01)
    assert tl.stats.tls_failures == {"connection closed during handshake": 2}
    assert [e["reason"] for e in logged if e["event"] == "tls_handshake_failed"] == [
        "connection closed during handshake"] * 2
    assert tl.connection_count == 0
    await tl.close()


async def test_a_handshake_step_that_raises_ends_its_connection_and_no_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Handshake steps run in the layer's slices: one that raises is logged and its
    connection aborted, and the slices go on for the next client."""
    real = Connection.connection_made
    broken = [True]

    def connection_made(conn: Connection, transport: asyncio.BaseTransport) -> None:
        if broken.pop() if broken else False:
            raise RuntimeError("a fault of ours")
        real(conn, transport)

    monkeypatch.setattr(Connection, "connection_made", connection_made)
    tl, _, port = await tls_layer(tmp_path, Limits())
    with capture_logs() as logged:
        first_reader, first = await open_tls("127.0.0.1", port)
        assert await asyncio.wait_for(first_reader.read(), 5) == b""
        reader, writer = await open_tls("127.0.0.1", port)
        writer.write(PING)
        assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"
    assert [e["event"] for e in logged].count("tls_handshake_crashed") == 1
    assert tl.connection_count == 1
    first.close()
    writer.close()
    await tl.close()


async def test_a_closed_connection_whose_peer_does_not_read_is_aborted_by_the_sweeper(
    tmp_path: Path,
) -> None:
    """Closed for idleness with megabytes still waiting for a peer that does not read:
    the next sweep aborts it rather than holding it (and what waits) for ever."""
    tl, inbox, port = await tls_layer(tmp_path, Limits(idle_timeout=0.3,
                                                       max_write_buffer=64 << 20))
    _, writer = await open_tls("127.0.0.1", port, limit=4096)
    writer.write(MESSAGE)
    peer = await inbox.get()
    for _ in range(512):  # 32 MiB: more than loopback buffers hold toward a peer not reading
        tl.send(b"y" * 65536, peer)
    with capture_logs() as logged:
        for _ in range(300):
            if tl.connection_count == 0:
                break
            await asyncio.sleep(0.01)
    assert tl.connection_count == 0
    assert [e["event"] for e in logged].count("connection_idle_closed") == 2  # close, abort
    writer.close()
    await tl.close()


async def test_reads_are_bounded_per_loop_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A peer sending faster than we decrypt does not keep the loop in one connection's
    reads: at most READS_A_TURN records (16 KiB each) are handed on at once, and all of it
    arrives."""
    handed: list[int] = []
    monkeypatch.setattr(Connection, "data_received",
                        lambda conn, data: handed.append(len(data)))
    tl, _, port = await tls_layer(tmp_path, Limits())
    _, writer = await open_tls("127.0.0.1", port)
    writer.write(b"z" * (2 << 20))
    for _ in range(500):
        if sum(handed) == 2 << 20:
            break
        await asyncio.sleep(0.01)
    assert sum(handed) == 2 << 20
    assert max(handed) <= READS_A_TURN * 16384
    writer.close()
    await tl.close()


async def test_clients_that_end_together_are_answered_a_slice_a_loop_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Peers' close_notify (or end of stream) are answered with ours in the layer's slices
    of TLS work, as handshake steps are: with no time a turn to spare, one end a loop turn,
    however many arrived together. Thousands of clients gone at once (an outage, a pool
    restarting) would otherwise each cost a shutdown and the freeing of their TLS state in
    the one turn they arrived in."""
    monkeypatch.setattr(layer_module, "TLS_SLICE_S", 0.0)
    loop = asyncio.get_running_loop()
    turn = [0]

    def tick() -> None:
        if turn[0] >= 0:  # -1: stopped
            turn[0] += 1
            loop.call_soon(tick)

    ends: list[int] = []
    close = TlsStream.close

    def close_noted(stream: TlsStream) -> None:
        ends.append(turn[0])
        close(stream)

    monkeypatch.setattr(TlsStream, "close", close_noted)
    tl, _, port = await tls_layer(tmp_path, Limits())
    clients = [await open_tls("127.0.0.1", port) for _ in range(10)]
    for reader, writer in clients:
        writer.write(PING)
        assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"
    tick()
    for _, writer in clients:
        writer.close()
    for _ in range(300):
        if tl.connection_count == 0:
            break
        await asyncio.sleep(0.01)
    assert tl.connection_count == 0
    turn[0] = -1
    assert len(ends) == 10 and len(set(ends)) == 10
    await tl.close()
