"""How stream connections end (issue 22, "Connections"): a peer that sends half a message,
or nothing, is closed after the idle timeout and forgotten; a TLS peer that never finishes
its handshake after the handshake timeout; a TLS peer's close_notify is answered with ours
at once. Bounded: timeouts of a fraction of a second."""

from __future__ import annotations

import asyncio
import gc
import ssl
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gateway.transport import layer as layer_module
from gateway.transport.errors import FramingError
from gateway.transport.layer import Connection, Limits, TransportLayer
from gateway.transport.peer import Peer
from gateway.transport.tls_stream import TlsStream
from tests.kit.tls import client_tls, node_tls

IDLE = 0.4
HEAD = (b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bK1\r\n"
        b"From: <sip:b@127.0.0.1>;tag=1\r\nTo: <sip:a@127.0.0.1>\r\nCall-ID: c\r\n"
        b"CSeq: 1 OPTIONS\r\n")
HALF_MESSAGES = {
    "head cut short": HEAD,
    "body cut short": HEAD + b"Content-Type: text/plain\r\nContent-Length: 10\r\n\r\nabc",
    "nothing": b"",
}


class Inbox:
    def __init__(self) -> None:
        self.items: list[tuple[bytes, Peer, FramingError | None]] = []

    def __call__(self, data: bytes, peer: Peer, error: FramingError | None) -> None:
        self.items.append((data, peer, error))


async def layer(tmp_path: Path, name: str, limits: Limits) -> tuple[TransportLayer, Inbox, int]:
    inbox = Inbox()
    if name == "TCP":
        tl = TransportLayer(inbox, limits=limits)
        return tl, inbox, await tl.listen_tcp("127.0.0.1", 0)
    tl = TransportLayer(inbox, limits=limits, server_tls=node_tls(tmp_path))
    return tl, inbox, await tl.listen_tls("127.0.0.1", 0)


async def closed_by_peer(reader: asyncio.StreamReader, timeout: float) -> bool:
    try:
        while await asyncio.wait_for(reader.read(65536), timeout):
            pass
    except TimeoutError:
        return False
    except (ConnectionError, ssl.SSLError):
        pass
    return True


@pytest.mark.parametrize("name", ["TCP", "TLS"])
@pytest.mark.parametrize("half", list(HALF_MESSAGES))
async def test_a_half_message_or_nothing_is_closed_after_the_idle_timeout(
    tmp_path: Path, name: str, half: str
) -> None:
    tl, inbox, port = await layer(tmp_path, name, Limits(idle_timeout=IDLE))
    with capture_logs() as logged:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_tls() if name == "TLS" else None)
        started = time.monotonic()
        writer.write(HALF_MESSAGES[half])
        await writer.drain()
        assert tl.connection_count == 1
        # Not before the timeout: a slow sender is not cut off mid-message at once.
        assert not await closed_by_peer(reader, IDLE * 0.5)
        assert await closed_by_peer(reader, IDLE * 4)
        waited = time.monotonic() - started
    # The layer counts from its accept, a little before the client's handshake returns.
    assert IDLE * 0.75 <= waited < IDLE * 4
    assert [e["event"] for e in logged].count("connection_idle_closed") == 1
    assert inbox.items == []  # nothing framed from the half message
    for _ in range(50):
        if tl.connection_count == 0:
            break
        await asyncio.sleep(0.01)
    assert tl.connection_count == 0
    writer.close()
    await tl.close()


@pytest.mark.parametrize("name", ["TCP", "TLS"])
async def test_the_sweeper_closes_many_idle_connections_a_slice_a_turn(
    tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With no time a turn to spare, the sweeper still closes one idle connection a loop
    turn and goes on from where it stopped, until every one is closed."""
    monkeypatch.setattr(layer_module, "SWEEP_SLICE_S", 0.0)
    tl, _, port = await layer(tmp_path, name, Limits(idle_timeout=IDLE))
    clients = [await asyncio.open_connection(
        "127.0.0.1", port, ssl=client_tls() if name == "TLS" else None) for _ in range(12)]
    with capture_logs() as logged:
        for reader, _ in clients:
            assert await closed_by_peer(reader, IDLE * 4)
    assert [e["event"] for e in logged].count("connection_idle_closed") == 12
    for _ in range(50):
        if tl.connection_count == 0:
            break
        await asyncio.sleep(0.01)
    assert tl.connection_count == 0
    for _, writer in clients:
        writer.close()
    await tl.close()


async def test_a_trickle_of_bytes_keeps_a_connection_open_past_the_idle_timeout() -> None:
    """Idle means silent: each byte of a slowly sent message is activity. (A message still
    has MAX_MESSAGE as its bound.)"""
    tl = TransportLayer(Inbox(), limits=Limits(idle_timeout=IDLE))
    port = await tl.listen_tcp("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for i in range(6):
        writer.write(HEAD[i:i + 1])
        await asyncio.sleep(IDLE / 3)
    assert not reader.at_eof() and tl.connection_count == 1
    writer.close()
    await tl.close()


async def test_a_tls_handshake_never_finished_is_closed_after_the_handshake_timeout(
    tmp_path: Path,
) -> None:
    tl, _, port = await layer(tmp_path, "TLS", Limits(handshake_timeout=0.3))
    with capture_logs() as logged:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"\x16\x03\x01")  # the first bytes of a ClientHello, no more
        assert await closed_by_peer(reader, 3)
    [failed] = [e for e in logged if e["event"] == "tls_handshake_failed"]
    assert failed["reason"] == "handshake timed out"
    assert tl.connection_count == 0
    writer.close()
    await tl.close()


async def test_a_tls_close_notify_is_answered_at_once_and_the_connection_forgotten(
    tmp_path: Path,
) -> None:
    """CPython's TLS read returns b"" for close_notify: answered with ours, not left
    for the idle timeout (a client that waits for it would hold the connection open)."""
    tl, _, port = await layer(tmp_path, "TLS", Limits())
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_tls())
    writer.write(b"\r\n\r\n")
    assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"  # pong
    started = time.monotonic()
    writer.close()  # close_notify; asyncio waits for the server's before it closes
    await asyncio.wait_for(writer.wait_closed(), 5)
    assert time.monotonic() - started < 1.0
    for _ in range(50):
        if tl.connection_count == 0:
            break
        await asyncio.sleep(0.01)
    assert tl.connection_count == 0
    await tl.close()


async def test_closed_tls_connections_are_freed_without_the_collector(tmp_path: Path) -> None:
    """The daemon makes full collections rare (tune_gc): a closed connection caught in a
    reference cycle kept its OpenSSL state (~25 kB) until one ran. Closed by the client and
    closed for idleness, neither may be left for the collector."""
    gc.collect()
    gc.disable()
    try:
        tl, _, port = await layer(tmp_path, "TLS", Limits(idle_timeout=IDLE))
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_tls())
        writer.write(b"\r\n\r\n")
        assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), 5)
        idle_reader, idle_writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_tls())
        assert await closed_by_peer(idle_reader, IDLE * 4)
        idle_writer.close()
        for _ in range(50):
            if tl.connection_count == 0:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        alive = [o for o in gc.get_objects() if isinstance(o, Connection | TlsStream)]
        assert alive == [], [type(r).__name__ for a in alive for r in gc.get_referrers(a)]
        await tl.close()
    finally:
        gc.enable()
