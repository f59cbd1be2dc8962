"""Sockets for SIP: UDP, TCP and TLS listeners, outbound connections and their reuse.

The layer moves whole messages: datagrams as received, stream messages cut by
`StreamFramer`. It knows nothing of SIP beyond framing. Received messages go to one callback
with the `Peer` they came from; `send(data, peer)` goes back on the connection named in the
peer when it is still open (replies and in-dialog requests reuse the connection a request came
on), else on an open connection to the same address, else on a new one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import socket
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from gateway import logs
from gateway.transport.errors import FramingError
from gateway.transport.framing import Framed, Ping, StreamFramer, Unframed
from gateway.transport.peer import Peer, Transport
from gateway.transport.tls import failure_reason, peer_name_ok
from gateway.transport.tls_stream import TlsStream

log = logs.get(__name__)

MAX_DATAGRAM = 65535
# What a UDP listener asks the kernel to buffer: the default (~208 KiB, ~400 INVITEs) fills
# within a pause of the loop (a garbage collection, a slow disk) at a few hundred calls per
# second, and every datagram dropped then is a retransmission 500 ms later.
UDP_RECEIVE_BUFFER = 4 * 1024 * 1024
# CPU the sweeper spends closing idle connections per loop turn.
SWEEP_SLICE_S = 0.002
# CPU spent on TLS handshakes and ends per loop turn before the loop reads its sockets again.
TLS_SLICE_S = 0.002
# A TLS listener's queue of connections not yet accepted (asyncio's default for its own).
LISTEN_BACKLOG = 100
# After an accept fails for want of descriptors or memory, before the listener tries again.
ACCEPT_RETRY_S = 1.0


@dataclass(frozen=True, slots=True)
class Limits:
    max_connections: int = 10000
    idle_timeout: float = 1800.0  # Lync keeps TLS connections with CRLF pings
    handshake_timeout: float = 10.0
    connect_timeout: float = 5.0
    max_write_buffer: int = 1024 * 1024  # a peer that does not read is dropped, not buffered


# on_message(data, peer, error): error is set when a stream message could not be framed;
# the receiver answers it if it can, and the layer closes that connection afterwards.
MessageHandler = Callable[[bytes, Peer, FramingError | None], None]
# on_unreachable(peer, reason): a send could not be delivered (connect or handshake failed).
FailureHandler = Callable[[Peer, str], None]
# links(host, port): the client context for a trusted link to that address (a cluster's node,
# under the cluster's own CA), or None for an ordinary peer.
LinkContexts = Callable[[str, int], ssl.SSLContext | None]


# getsockopt(SOL_SOCKET, SO_MEMINFO): nine u32 (linux/sock_diag.h), of which these three.
SO_MEMINFO = 55
_RMEM_ALLOC, _RCVBUF, _DROPS = 0, 1, 8


@dataclass(frozen=True, slots=True)
class ReceiveQueues:
    fill: float  # of the fullest UDP receive buffer, 0..1
    drops: int  # datagrams the kernel dropped at the UDP listeners, since they opened


@dataclass
class Stats:
    tls_handshakes: int = 0
    tls_failures: dict[str, int] = field(default_factory=dict)
    connections_refused: int = 0


class _Datagram(asyncio.DatagramProtocol):
    def __init__(self, layer: TransportLayer) -> None:
        self.layer = layer

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        # addr is (host: str, port: int) on AF_INET and AF_INET6 (with flow and scope after).
        if len(data) > MAX_DATAGRAM:
            return
        if not data.lstrip(b"\r\n"):  # lstrip: a message (no leading CRLF) is not copied
            return  # keep-alive over UDP: nothing to answer
        self.layer.on_message(data, Peer(Transport.UDP, addr[0], addr[1]), None)

    def error_received(self, exc: Exception) -> None:
        log.debug("udp_error", error=str(exc))


class Connection(asyncio.Protocol):
    """One TCP or TLS connection, inbound or outbound."""

    # A node holds thousands of idle connections: no per-instance dict.
    __slots__ = ("framer", "id", "last_activity", "layer", "name", "peer", "transport",
                 "trusted")

    def __init__(self, layer: TransportLayer, transport_name: str, cid: int,
                 trusted: bool = False) -> None:
        self.layer = layer
        self.name = transport_name
        self.id = cid
        self.trusted = trusted  # the peer proved a certificate under a link's private CA
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.peer: Peer | None = None
        self.last_activity = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        host, port = transport.get_extra_info("peername")[:2]
        self.peer = Peer(Transport(self.name), str(host), int(port), self.id)
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
            elif isinstance(item, Unframed):
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
        # Freed by reference counting, not left to the collector: the daemon makes full
        # collections rare (daemon/command.py tune_gc), and a TLS connection's cycle
        # (Connection -> TlsStream -> Connection) holds ~25 kB of OpenSSL
        # state the collector's thresholds do not see: 10,000 closed connections kept
        # ~250 MB until the next full collection.
        self.transport = None


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
        self.links: LinkContexts | None = None
        # Where link connections are opened from: the address the other end knows us by.
        self.link_source: str | None = None
        self.stats = Stats()
        self._ids = itertools.count(1)
        self._conns: dict[int, Connection] = {}
        self._by_addr: dict[tuple[str, str, int], int] = {}
        self._udp: dict[int, asyncio.DatagramTransport] = {}  # by address family
        self._servers: list[asyncio.AbstractServer] = []
        self._pending: dict[tuple[str, str, int], list[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._tls_listeners: list[socket.socket] = []
        # Accepted TLS connections until their handshake ends.
        self._handshaking: set[TlsStream] = set()
        self._handshakes: collections.deque[TlsStream] = collections.deque()
        self._pumping = False
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
        granted = _grow_receive_buffer(sock)
        log.info("udp_receive_buffer", port=bound, asked=UDP_RECEIVE_BUFFER, granted=granted,
                 note="" if granted >= UDP_RECEIVE_BUFFER else
                 "capped by net.core.rmem_max; raise it for bursts at high call rates")
        self.listening.append(("UDP", host, bound))
        self._start_sweeper()
        return bound

    def receive_queues(self) -> ReceiveQueues:
        """How full the UDP listeners' kernel receive buffers are, and what the kernel has
        dropped at them for want of room (SO_MEMINFO, Linux): what overload control and the
        benchmarks read."""
        fill, drops = 0.0, 0
        for transport in self._udp.values():
            sock = transport.get_extra_info("socket")
            try:
                info = struct.unpack("9I", sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 36))
            except OSError:  # not Linux, or a socket already closed
                continue
            if info[_RCVBUF]:
                fill = max(fill, info[_RMEM_ALLOC] / info[_RCVBUF])
            drops += info[_DROPS]
        return ReceiveQueues(fill, drops)

    async def listen_tcp(self, host: str, port: int) -> int:
        return await self._listen_stream("TCP", host, port)

    async def listen_tls(self, host: str, port: int, link: ssl.SSLContext | None = None
                         ) -> int:
        """TLS with `self.server_tls`, which must be set first; or, with `link` (a context
        requiring a client certificate under a private CA), a listener of trusted links:
        every connection it accepts has proved such a certificate (`trusted`)."""
        if self.server_tls is None and link is None:
            raise ValueError("listen_tls needs server_tls")
        return await self._listen_stream("TLS", host, port, link)

    def trusted(self, peer: Peer) -> bool:
        """Whether `peer`'s connection is a trusted link (accepted by a link listener, or
        opened with a context `links` gave)."""
        conn = self._conns.get(peer.connection) if peer.connection is not None else None
        return conn is not None and conn.trusted

    async def _listen_stream(self, name: str, host: str, port: int,
                             link: ssl.SSLContext | None = None) -> int:
        loop = asyncio.get_running_loop()
        if name == "TLS":
            bound = await self._listen_tls(loop, host, port, link)
        else:
            def accept() -> asyncio.Protocol:
                if not self._admit():
                    return _Refuse()
                conn = Connection(self, name, next(self._ids))
                self._conns[conn.id] = conn
                return conn

            server = await loop.create_server(accept, host, port, reuse_address=True)
            self._servers.append(server)
            bound = int(server.sockets[0].getsockname()[1])
        self.listening.append((name, host, bound))
        self._start_sweeper()
        return bound

    def _admit(self) -> bool:
        if len(self._conns) < self.limits.max_connections:
            return True
        self.stats.connections_refused += 1
        log.warning("connection_refused", reason="connection cap reached",
                    cap=self.limits.max_connections)
        return False

    async def _listen_tls(self, loop: asyncio.AbstractEventLoop, host: str, port: int,
                          link: ssl.SSLContext | None) -> int:
        """TLS listeners accept on sockets of their own (see `tls_stream` for why), every
        address `host` has, as `create_server` would bind them."""
        infos = await loop.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
        bound = port
        for family, kind, proto, _, address in dict.fromkeys(
                (i[0], i[1], i[2], i[3], i[4]) for i in infos):
            sock = socket.socket(family, kind, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                # With port 0, every address on the port the first was given.
                sock.bind((address[0], bound, *address[2:]))
                sock.listen(LISTEN_BACKLOG)
                sock.setblocking(False)
            except OSError as exc:
                sock.close()
                raise OSError(exc.errno, f"error while attempting to bind on address "
                                         f"{address[:2]!r}: {exc.strerror}") from None
            bound = int(sock.getsockname()[1])
            self._tls_listeners.append(sock)
            loop.add_reader(sock.fileno(), self._accept_tls, sock, link)
        return bound

    def _accept_tls(self, listener: socket.socket, link: ssl.SSLContext | None) -> None:
        """What the listen queue holds, at most a backlog's worth a loop turn (as asyncio's
        own accept does), each to a `TlsStream` whose handshake the layer steps."""
        loop = asyncio.get_running_loop()
        for _ in range(LISTEN_BACKLOG):
            try:
                sock, peername = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                # Out of descriptors or buffers: retried in a second, not in a busy loop.
                log.error("accept_failed", error=str(exc), retry_in_s=ACCEPT_RETRY_S)
                loop.remove_reader(listener.fileno())
                loop.call_later(ACCEPT_RETRY_S, self._accept_again, listener, link)
                return
            if not self._admit():
                sock.close()
                continue
            context = link or self.server_tls
            assert context is not None
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                tls = context.wrap_socket(sock, server_side=True,
                                          do_handshake_on_connect=False)
            except OSError:  # reset before we got to it
                sock.close()
                continue
            conn = Connection(self, "TLS", next(self._ids), trusted=link is not None)
            self._conns[conn.id] = conn
            stream = TlsStream(self, conn, tls, peername, loop)
            self._handshaking.add(stream)

    def _accept_again(self, listener: socket.socket, link: ssl.SSLContext | None) -> None:
        if listener in self._tls_listeners:
            asyncio.get_running_loop().add_reader(listener.fileno(), self._accept_tls,
                                                  listener, link)

    def _tls_established(self, stream: TlsStream) -> None:
        self._handshaking.discard(stream)
        self.stats.tls_handshakes += 1

    def _tls_failed(self, stream: TlsStream) -> None:
        self._handshaking.discard(stream)
        self._forget(stream.conn)

    def _close_tls_listeners(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closing too
            loop = asyncio.get_running_loop()
            for sock in self._tls_listeners:
                loop.remove_reader(sock.fileno())
        for sock in self._tls_listeners:
            sock.close()
        self._tls_listeners.clear()

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
        task = asyncio.get_running_loop().create_task(
            self._connect(peer, peer.server_name or None))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, peer: Peer, server_name: str | None = None) -> None:
        key = (peer.transport, peer.host, peer.port)
        loop = asyncio.get_running_loop()
        link = (self.links(peer.host, peer.port)
                if self.links is not None and peer.transport == "TLS" else None)
        conn = Connection(self, peer.transport, next(self._ids), trusted=link is not None)
        try:
            if peer.transport == "TLS":
                context = link or self.client_tls
                if context is None:
                    raise ConnectionError("no TLS client context configured")
                name = server_name or peer.host
                source = (self.link_source, 0) if link and self.link_source else None
                await asyncio.wait_for(
                    loop.create_connection(
                        lambda: conn, peer.host, peer.port, ssl=context,
                        server_hostname=name, local_addr=source,
                    ),
                    self.limits.connect_timeout + self.limits.handshake_timeout,
                )
                self.stats.tls_handshakes += 1
                assert conn.transport is not None
                der = conn.transport.get_extra_info("ssl_object").getpeercert(binary_form=True)
                # A link's private CA certifies its nodes by that alone: it names no domain
                # for RFC 5922 to check.
                if (link is None and context.verify_mode != ssl.CERT_NONE
                        and not peer_name_ok(der, name)):
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

    def _tls_step_due(self, stream: TlsStream) -> None:
        self._handshakes.append(stream)
        if not self._pumping:
            self._pumping = True
            asyncio.get_running_loop().call_soon(self._pump_tls_steps)

    def _pump_tls_steps(self) -> None:
        """TLS handshake steps and ends, TLS_SLICE_S of them per loop turn. A handshake step
        costs ~1 ms of CPU (signing, key exchange, the client's chain); taken as their data
        arrives, a burst of clients reconnecting (a pool after a restart) ran dozens back to
        back in one turn while every datagram waited: OPTIONS p99 21 ms during 10,000
        handshakes (bench/connections.py). An end (our close_notify, the socket closed, the
        TLS state freed) costs ~30 us: 10,000 clients gone at once held the loop 0.3-0.5 s,
        now at most ~12 ms. Between slices the loop reads its sockets again."""
        deadline = time.perf_counter() + TLS_SLICE_S
        queue = self._handshakes
        while queue:
            stream = queue.popleft()
            try:
                stream.advance()
            except Exception:  # one connection's fault must not stop every other handshake
                log.exception("tls_handshake_crashed", peer=stream.get_extra_info("peername"))
                stream.abort()
            if time.perf_counter() >= deadline:
                break
        if queue:
            asyncio.get_running_loop().call_soon(self._pump_tls_steps)
        else:
            self._pumping = False

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
            idle = [cid for cid, conn in self._conns.items() if conn.last_activity < cutoff]
            # Thousands may idle out together (clients that connected in one burst): closed
            # a slice of CPU per loop turn, so datagrams waiting meanwhile are not held up
            # behind all of them (10,000 at once stalled the loop ~0.1 s). By time, not
            # count: 200 a turn, the idle phase of bench/connections.py (TLS ends cost
            # more than TCP's) had OPTIONS p99 9.3-10.1 ms; 2 ms a turn, 4.1 ms.
            start = 0
            while start < len(idle):
                start = self._close_idle(idle, start, cutoff)
                await asyncio.sleep(0)

    def _close_idle(self, ids: list[int], start: int, cutoff: float) -> int:
        """Closes the idle among `ids` from `start` for SWEEP_SLICE_S (one at least, so a
        sweep always ends); returns where it stopped. Not inline in _sweep: a loop variable
        there would keep the last connection (and its TLS state) alive across the sleep."""
        deadline = time.perf_counter() + SWEEP_SLICE_S
        for at in range(start, len(ids)):
            conn = self._conns.get(ids[at])
            if conn is not None and conn.last_activity < cutoff and conn.transport is not None:
                log.info("connection_idle_closed", peer=_fmt(conn.peer))
                if conn.transport.is_closing():
                    # Closed (for idleness, or after an error) and still waiting for a
                    # peer that does not read what it was sent: given up.
                    conn.transport.abort()
                else:
                    conn.transport.close()
            if time.perf_counter() >= deadline:
                return at + 1
        return len(ids)

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        self._close_tls_listeners()
        for udp in self._udp.values():
            udp.close()
        for stream in list(self._handshaking):
            stream.abort()
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
        self._close_tls_listeners()


class _Refuse(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


def _fmt(peer: Peer | None) -> str:
    return "-" if peer is None else f"{peer.transport.lower()}:{peer.host}:{peer.port}"


def _grow_receive_buffer(sock: socket.socket) -> int:
    """Ask for UDP_RECEIVE_BUFFER bytes, past net.core.rmem_max (which caps a plain
    SO_RCVBUF silently) where the process may (CAP_NET_ADMIN). Returns the usable size the
    kernel granted (Linux reports twice that, counting its bookkeeping)."""
    force = getattr(socket, "SO_RCVBUFFORCE", None)
    for option in (force, socket.SO_RCVBUF):
        if option is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, UDP_RECEIVE_BUFFER)
                break
            except OSError:
                continue
    size = int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
    return size // 2 if force is not None else size
