"""Server-side TLS on the accepted socket itself: a non-blocking `ssl.SSLSocket`, the
handshake stepped by the layer, and the asyncio transport a `Connection` writes to.

Why not asyncio's TLS (`create_server(ssl=...)` or `start_tls`): the failure's reason goes
to the loop's exception handler, not to our log, and asyncio and uvloop differ in when they
begin to read. Why not an `SSLObject` over two `MemoryBIO`s, as this module's predecessor
did: the BIOs keep their handshake-sized buffers for the connection's life, ~4 kB of an
idle mutual-TLS connection's ~30 (bench/connections.py; docs/architecture.md), and a node
holds thousands of them. On the socket, OpenSSL reads and writes the kernel's buffers
directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import TYPE_CHECKING, Any

from gateway import logs
from gateway.transport.tls import failure_reason

if TYPE_CHECKING:
    from gateway.transport.layer import Connection, TransportLayer

log = logs.get(__name__)

READ_SIZE = 65536  # more than a TLS record's 16 KiB: one read empties a record
READS_A_TURN = 16


class TlsStream(asyncio.Transport):
    """One accepted TLS connection: handshake (steps taken by `TransportLayer`, a slice of
    CPU per loop turn), then records both ways for its `Connection`.

    Writes go straight to the socket; what the kernel does not take waits here (OpenSSL
    wants a refused write repeated with the same bytes, so `_retry` holds those and `_out`
    what came after) until the socket is writable. `Connection.write` drops a peer that
    lets more than `Limits.max_write_buffer` wait."""

    # A node holds thousands of these: no per-instance dict.
    __slots__ = ("_closing", "_gone", "_loop", "_out", "_queued", "_reading", "_retry",
                 "_timer", "_writing", "conn", "fd", "layer", "peername", "ready", "sock")

    def __init__(self, layer: TransportLayer, conn: Connection, sock: ssl.SSLSocket,
                 peername: tuple[Any, ...], loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.layer = layer
        self.conn = conn
        self.sock = sock
        # As accept gave it: getpeername() fails once the peer has reset the connection.
        self.peername = peername
        self.fd = sock.fileno()
        self.ready = False  # handshake done
        self._loop = loop
        self._queued = False  # a handshake step waits in the layer's queue
        self._closing = False  # close() called: the rest of _out goes, then close_notify
        self._gone = False  # socket closed
        self._retry: bytes | None = None
        self._out = bytearray()
        self._reading = False
        self._writing = False
        self._timer: asyncio.TimerHandle | None = loop.call_later(
            layer.limits.handshake_timeout, self._fail, TimeoutError())
        self._read_when_ready()

    # -- the handshake ---------------------------------------------------------------------
    def advance(self) -> None:
        """The next step of the handshake with what has arrived, or once the peer has
        ended, our end (the layer calls it in turn with the other connections' steps, see
        `TransportLayer._pump_tls_steps`)."""
        self._queued = False
        if self._gone:
            return
        if self.ready:  # queued again by the peer's end (see _readable)
            self.close()
            return
        try:
            self.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._read_when_ready()
            return
        except ssl.SSLWantWriteError:
            self._write_when_ready()
            return
        except (ssl.SSLError, OSError) as exc:  # OpenSSL has sent the alert saying why
            self._fail(exc)
            return
        self.ready = True
        self._cancel_timer()
        self.layer._tls_established(self)
        self.conn.connection_made(self)
        log.debug("tls_accepted", peer=self._peer(),
                  client_cert=self.sock.getpeercert() not in (None, {}))
        self._read_when_ready()
        self._readable()  # the client's first request may have come with its Finished

    def _fail(self, exc: BaseException) -> None:
        if self.ready or self._gone:
            return
        reason = failure_reason(exc)
        self.layer._count_failure(reason)
        log.warning("tls_handshake_failed", reason=reason, peer=self._peer(),
                    detail=str(exc)[:200])
        self._close_socket()
        self.layer._tls_failed(self)

    # -- I/O -------------------------------------------------------------------------------
    def _readable(self) -> None:
        if not self.ready:
            # Level-triggered: left registered, the loop would call this every turn until
            # the step is taken. Registered again when the handshake wants to read.
            self._stop_reading()
            if not self._queued:
                self._queued = True
                self.layer._tls_step_due(self)
            return
        plain: list[bytes] = []
        ended = False
        # Bounded, as asyncio reads once a turn: a peer sending as fast as we decrypt would
        # otherwise keep the loop here. What is left fires the reader again next turn.
        while not self._gone and len(plain) < READS_A_TURN:
            try:
                chunk = self.sock.recv(READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLWantWriteError:  # a TLS 1.3 key update the kernel cannot take yet
                self._write_when_ready()
                break
            except ssl.SSLError as exc:
                log.info("tls_read_failed", peer=self._peer(), reason=failure_reason(exc))
                self.abort()
                return
            except OSError:  # reset by the peer
                self.abort()
                return
            if not chunk:  # the peer's close_notify, or its end of the TCP stream
                ended = True
                break
            plain.append(chunk)
        if plain:
            self.conn.data_received(b"".join(plain))
        if ended:
            # Soon: a client that waits for our close_notify (asyncio's waits 30 s, a
            # blocking `unwrap()` for ever) would otherwise hold the connection until then.
            # In the layer's slices, as handshakes are: thousands of clients gone at once
            # (a network outage, a pool restarting) each cost a shutdown and the freeing of
            # their TLS state, which in one loop turn held every datagram up.
            self._stop_reading()
            if not self._queued:
                self._queued = True
                self.layer._tls_step_due(self)

    def _writable(self) -> None:
        if not self.ready:
            self._stop_writing()
            self.advance()
            return
        self._flush()
        if self._retry is None and not self._closing:
            self._stop_writing()
            self._readable()  # a read that waited to write (_readable) goes on

    def _flush(self) -> None:
        while not self._gone:
            if self._retry is None:
                if not self._out:
                    break
                self._retry = bytes(self._out)
                self._out.clear()
            try:
                self.sock.send(self._retry)
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                self._write_when_ready()
                return
            except (ssl.SSLError, OSError):
                self.abort()
                return
            self._retry = None
        if self._closing and not self._gone:
            self._shutdown()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self._gone:
            return
        self._out += data
        if self._retry is None and not self._writing:
            self._flush()

    def get_write_buffer_size(self) -> int:
        return len(self._out) + (len(self._retry) if self._retry is not None else 0)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass  # Connection.write bounds what waits (Limits.max_write_buffer)

    # -- ending ----------------------------------------------------------------------------
    def close(self) -> None:
        """What waits to be written goes first, then our close_notify, then the socket."""
        if self._closing or self._gone:
            return
        self._closing = True
        self._stop_reading()
        if self._retry is None and not self._out:
            self._shutdown()

    def _shutdown(self) -> None:
        with contextlib.suppress(ssl.SSLError, OSError, ValueError):
            # Sends close_notify; raises SSLWantReadError when the peer's has not come, which
            # we do not wait for (RFC 8446 6.1 allows closing without it).
            self.sock.unwrap()
        self.abort()

    def abort(self) -> None:
        if self._gone:
            return
        self._close_socket()
        if self.ready:
            self._loop.call_soon(self.conn.connection_lost, None)
        else:
            self.layer._tls_failed(self)

    def _close_socket(self) -> None:
        self._gone = True
        self._closing = True
        self._cancel_timer()
        self._stop_reading()
        self._stop_writing()
        self._retry = None
        self._out.clear()
        self.sock.close()

    def is_closing(self) -> bool:
        return self._closing

    # -- bookkeeping -----------------------------------------------------------------------
    def _read_when_ready(self) -> None:
        if not self._reading and not self._gone:
            self._reading = True
            self._loop.add_reader(self.fd, self._readable)

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self.fd)

    def _write_when_ready(self) -> None:
        if not self._writing and not self._gone:
            self._writing = True
            self._loop.add_writer(self.fd, self._writable)

    def _stop_writing(self) -> None:
        if self._writing:
            self._writing = False
            self._loop.remove_writer(self.fd)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _peer(self) -> str:
        return f"tls:{self.peername[0]}:{self.peername[1]}"

    def get_extra_info(self, name: str, default: object = None) -> object:
        if name == "peername":
            return self.peername
        if self._gone:
            return default
        if name == "sockname":
            return self.sock.getsockname()
        if name in ("socket", "ssl_object"):
            return self.sock
        if name == "peercert":
            return self.sock.getpeercert() or default
        return default
