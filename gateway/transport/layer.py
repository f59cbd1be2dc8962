"""Sockets for SIP: UDP, TCP and TLS listeners, outbound connections and their reuse.

The layer moves whole messages: datagrams as received, stream messages cut by
`StreamFramer`. It knows nothing of SIP beyond framing. Received messages go to one callback
with the `Peer` they came from; `send(data, peer)` goes back on the connection named in the
peer when it is still open (replies and in-dialog requests reuse the connection a request came
on), else on an open connection to the same address, else on a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway import logs
from gateway.sip.errors import SipParseError
from gateway.sip.transaction import Peer
from gateway.transport.framing import Framed, FramingError, Ping, StreamFramer
from gateway.transport.tls import failure_reason, peer_name_ok

log = logs.get(__name__)

MAX_DATAGRAM = 65535


@dataclass(frozen=True, slots=True)
class Limits:
    max_connections: int = 10000
    idle_timeout: float = 1800.0  # Lync keeps TLS connections with CRLF pings
    handshake_timeout: float = 10.0
    connect_timeout: float = 5.0
    max_write_buffer: int = 1024 * 1024  # a peer that does not read is dropped, not buffered


# on_message(data, peer, error): error is set when a stream message could not be framed;
# the receiver answers it if it can, and the layer closes that connection afterwards.
MessageHandler = Callable[[bytes, Peer, SipParseError | None], None]
# on_unreachable(peer, reason): a send could not be delivered (connect or handshake failed).
FailureHandler = Callable[[Peer, str], None]


@dataclass
class Stats:
    tls_handshakes: int = 0
    tls_failures: dict[str, int] = field(default_factory=dict)
    connections_refused: int = 0


class _Datagram(asyncio.DatagramProtocol):
    def __init__(self, layer: TransportLayer) -> None:
        self.layer = layer

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if len(data) > MAX_DATAGRAM:
            return
        if data.strip(b"\r\n") == b"":
            return  # keep-alive over UDP: nothing to answer
        self.layer.on_message(data, Peer("UDP", str(addr[0]), int(addr[1])), None)

    def error_received(self, exc: Exception) -> None:
        log.debug("udp_error", error=str(exc))


class Connection(asyncio.Protocol):
    """One TCP or TLS connection, inbound or outbound."""

    def __init__(self, layer: TransportLayer, transport_name: str, cid: int) -> None:
        self.layer = layer
        self.name = transport_name
        self.id = cid
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.peer: Peer | None = None
        self.last_activity = time.monotonic()
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        host, port = transport.get_extra_info("peername")[:2]
        self.peer = Peer(self.name, str(host), int(port), self.id)
        transport.set_write_buffer_limits(high=self.layer.limits.max_write_buffer)
        self.layer._register(self)

    def data_received(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        assert self.peer is not None
        for item in self.framer.feed(data):
            if isinstance(item, Framed):
                self.layer.on_message(item.data, self.peer, None)
            elif isinstance(item, Ping):
                self.write(b"\r\n")
            elif isinstance(item, FramingError):
                log.info("stream_framing_error", peer=_fmt(self.peer), error=item.error.reason)
                self.layer.on_message(item.data, self.peer, item.error)
                if self.transport is not None:
                    self.transport.close()  # after the error response already queued
                return

    def write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(data)
        if self.transport.get_write_buffer_size() > self.layer.limits.max_write_buffer:
            log.warning("connection_write_overflow", peer=_fmt(self.peer))
            self.transport.abort()

    def pause_writing(self) -> None:
        pass  # the overflow check in write() bounds what a slow reader can make us hold

    def resume_writing(self) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        self.layer._forget(self)
        if not self.closed.done():
            self.closed.set_result(None)


class TransportLayer:
    def __init__(
        self,
        on_message: MessageHandler,
        *,
        limits: Limits | None = None,
        client_tls: ssl.SSLContext | None = None,
        server_tls: ssl.SSLContext | None = None,
        on_unreachable: FailureHandler | None = None,
    ) -> None:
        self.on_message = on_message
        self.on_unreachable = on_unreachable
        self.limits = limits or Limits()
        # Read at each accept and connect, so a reload that swaps them affects only new
        # connections.
        self.client_tls = client_tls
        self.server_tls = server_tls
        self.stats = Stats()
        self._ids = itertools.count(1)
        self._conns: dict[int, Connection] = {}
        self._by_addr: dict[tuple[str, str, int], int] = {}
        self._udp: dict[int, asyncio.DatagramTransport] = {}  # by address family
        self._servers: list[asyncio.AbstractServer] = []
        self._pending: dict[tuple[str, str, int], list[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self.listening: list[tuple[str, str, int]] = []  # (transport, host, port) bound

    # -- listeners ----------------------------------------------------------------------
    async def listen_udp(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Datagram(self), local_addr=(host, port)
        )
        sock = transport.get_extra_info("socket")
        self._udp[sock.family] = transport
        bound = int(sock.getsockname()[1])
        self.listening.append(("UDP", host, bound))
        self._start_sweeper()
        return bound

    async def listen_tcp(self, host: str, port: int) -> int:
        return await self._listen_stream("TCP", host, port)

    async def listen_tls(self, host: str, port: int) -> int:
        """TLS with `self.server_tls`, which must be set first."""
        if self.server_tls is None:
            raise ValueError("listen_tls needs server_tls")
        return await self._listen_stream("TLS", host, port)

    async def _listen_stream(self, name: str, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()

        def accept() -> asyncio.Protocol:
            if len(self._conns) >= self.limits.max_connections:
                self.stats.connections_refused += 1
                log.warning("connection_refused", reason="connection cap reached",
                            cap=self.limits.max_connections)
                return _Refuse()
            conn = Connection(self, name, next(self._ids))
            self._conns[conn.id] = conn
            if name == "TCP":
                return conn
            assert self.server_tls is not None
            return _TlsAccept(self, conn, self.server_tls)

        server = await loop.create_server(accept, host, port, reuse_address=True)
        self._servers.append(server)
        bound = int(server.sockets[0].getsockname()[1])
        self.listening.append((name, host, bound))
        self._start_sweeper()
        return bound

    # -- sending ------------------------------------------------------------------------
    def send(self, data: bytes, peer: Peer) -> None:
        if peer.transport == "UDP":
            family = 10 if ":" in peer.host else 2  # AF_INET6 / AF_INET
            udp = self._udp.get(family)
            if udp is None:
                log.warning("udp_send_impossible", peer=_fmt(peer), reason="no UDP listener")
                return
            udp.sendto(data, (peer.host, peer.port))
            return
        conn = self._conns.get(peer.connection) if peer.connection is not None else None
        if conn is None or conn.transport is None:
            cid = self._by_addr.get((peer.transport, peer.host, peer.port))
            conn = self._conns.get(cid) if cid is not None else None
        if conn is not None and conn.transport is not None and not conn.transport.is_closing():
            conn.write(data)
            return
        key = (peer.transport, peer.host, peer.port)
        queued = self._pending.get(key)
        if queued is not None:
            queued.append(data)  # a connection to this address is being opened
            return
        self._pending[key] = [data]
        task = asyncio.get_running_loop().create_task(self._connect(peer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, peer: Peer, server_name: str | None = None) -> None:
        key = (peer.transport, peer.host, peer.port)
        loop = asyncio.get_running_loop()
        conn = Connection(self, peer.transport, next(self._ids))
        try:
            if peer.transport == "TLS":
                if self.client_tls is None:
                    raise ConnectionError("no TLS client context configured")
                name = server_name or peer.host
                await asyncio.wait_for(
                    loop.create_connection(
                        lambda: conn, peer.host, peer.port, ssl=self.client_tls,
                        server_hostname=name,
                    ),
                    self.limits.connect_timeout + self.limits.handshake_timeout,
                )
                self.stats.tls_handshakes += 1
                assert conn.transport is not None
                der = conn.transport.get_extra_info("ssl_object").getpeercert(binary_form=True)
                if self.client_tls.verify_mode != ssl.CERT_NONE and not peer_name_ok(der, name):
                    conn.transport.close()
                    raise ssl.SSLError(f"certificate does not name {name} (RFC 5922)")
            else:
                await asyncio.wait_for(
                    loop.create_connection(lambda: conn, peer.host, peer.port),
                    self.limits.connect_timeout,
                )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            reason = failure_reason(exc) if peer.transport == "TLS" else str(exc) or "timeout"
            if peer.transport == "TLS":
                self._count_failure(reason)
            log.warning("connect_failed", peer=_fmt(peer), reason=reason)
            self._pending.pop(key, None)
            if self.on_unreachable is not None:
                self.on_unreachable(peer, reason)
            return
        self._conns[conn.id] = conn
        for data in self._pending.pop(key, []):
            conn.write(data)

    def _count_failure(self, reason: str) -> None:
        self.stats.tls_failures[reason] = self.stats.tls_failures.get(reason, 0) + 1

    # -- bookkeeping --------------------------------------------------------------------
    def _register(self, conn: Connection) -> None:
        assert conn.peer is not None
        self._by_addr.setdefault((conn.name, conn.peer.host, conn.peer.port), conn.id)

    def _forget(self, conn: Connection) -> None:
        self._conns.pop(conn.id, None)
        if conn.peer is not None:
            key = (conn.name, conn.peer.host, conn.peer.port)
            if self._by_addr.get(key) == conn.id:
                del self._by_addr[key]

    @property
    def connection_count(self) -> int:
        return len(self._conns)

    def _start_sweeper(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        interval = max(0.05, min(5.0, self.limits.idle_timeout / 4))
        while True:
            await asyncio.sleep(interval)
            cutoff = time.monotonic() - self.limits.idle_timeout
            for conn in list(self._conns.values()):
                if conn.last_activity < cutoff and conn.transport is not None:
                    log.info("connection_idle_closed", peer=_fmt(conn.peer))
                    conn.transport.close()

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for udp in self._udp.values():
            udp.close()
        for conn in list(self._conns.values()):
            if conn.transport is not None:
                conn.transport.close()
        for task in list(self._tasks):
            task.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        self._udp.clear()

    def stop_listening(self) -> None:
        """Stop accepting connections; open ones and UDP go on so transactions can finish
        (the SIP core refuses new requests while draining)."""
        for server in self._servers:
            server.close()


class _Refuse(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class _TlsAccept(asyncio.Protocol):
    """Accepts TCP, then upgrades to TLS itself so a failed handshake's reason is ours to log
    (asyncio would only hand it to the loop's exception handler)."""

    def __init__(self, layer: TransportLayer, conn: Connection, context: ssl.SSLContext) -> None:
        self.layer = layer
        self.conn = conn
        self.context = context
        # Application data can arrive in the same read as the client's Finished, before the
        # upgrade coroutine resumes; it is kept here and handed to the connection.
        self.early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        # The ClientHello must wait in the socket until start_tls reads it.
        transport.pause_reading()
        task = asyncio.get_running_loop().create_task(self._upgrade(transport))
        self.layer._tasks.add(task)
        task.add_done_callback(self.layer._tasks.discard)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn.transport is None:
            self.layer._forget(self.conn)

    async def _upgrade(self, transport: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        peer = transport.get_extra_info("peername")
        try:
            tls = await asyncio.wait_for(
                loop.start_tls(transport, self, self.context, server_side=True),
                self.layer.limits.handshake_timeout,
            )
        except (OSError, TimeoutError, ssl.SSLError, ConnectionError) as exc:
            reason = failure_reason(exc)
            self.layer._count_failure(reason)
            log.warning("tls_handshake_failed", reason=reason, peer=f"{peer[0]}:{peer[1]}",
                        detail=str(exc)[:200])
            transport.abort()
            self.layer._forget(self.conn)
            return
        if tls is None:
            self.layer._forget(self.conn)
            return
        self.layer.stats.tls_handshakes += 1
        tls.set_protocol(self.conn)
        self.conn.connection_made(tls)
        for data in self.early:
            self.conn.data_received(data)
        self.early.clear()
        if self.conn.peer is not None:
            log.debug("tls_accepted", peer=_fmt(self.conn.peer),
                      client_cert=tls.get_extra_info("peercert") is not None)

    def data_received(self, data: bytes) -> None:
        self.early.append(data)

    def eof_received(self) -> bool | None:
        return None


def _fmt(peer: Peer | None) -> str:
    return "-" if peer is None else f"{peer.transport.lower()}:{peer.host}:{peer.port}"
