"""The node's SIP core: bytes in, bytes out, and the answers the node gives by itself.

`Endpoint` parses, validates, runs the transaction layer, stamps Via `received`/`rport`
(RFC 3581), answers OPTIONS (Lync pools and proxies probe with it), 405 for methods this node
does not take, 501 for methods it does not know, and hands INVITE and dialog requests to a
`CallHandler` (the B2BUA). Sans-I/O: the asyncio adapter is `gateway.daemon.node`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from gateway import logs
from gateway.sip.errors import SipError, SipParseError, SipRequestError
from gateway.sip.message import Request, Response, make_response, new_tag, stamp_received
from gateway.sip.parse import error_response, parse_message
from gateway.sip.timers import DEFAULT, Timers
from gateway.sip.transaction_layer import (
    AckReceived,
    CancelReceived,
    Event,
    RequestReceived,
    ResponseReceived,
    StrayResponse,
    TransactionLayer,
    TransactionTimeout,
    response_peer,
)
from gateway.sip.transaction_machines import ClientTransaction, Send, ServerTransaction
from gateway.sip.validate import SUPPORTED, check_request
from gateway.transport.errors import FramingError
from gateway.transport.peer import Peer

log = logs.get(__name__)

# Methods a SIP element must at least know (RFC 3261 and the extensions Lync uses); others
# get 501, these get 405 unless a handler takes them.
KNOWN_METHODS = frozenset(
    {
        "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE",
        "NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE", "SERVICE", "NEGOTIATE",
        "BENOTIFY",
    }
)


class CallHandler(Protocol):
    """What takes requests the core does not answer itself (the B2BUA, a registrar)."""

    @property
    def methods(self) -> frozenset[str]:
        """The request methods it takes (Allow lists them)."""
        ...

    def on_event(self, event: Event, now: float, core: Endpoint) -> list[Event]:
        """Handle `event`; answer through `core.respond`, which returns what to send."""
        ...

    def next_deadline(self) -> float | None:
        """When the handler's own timers (session timers) next need `handle_timeout`."""
        ...

    def handle_timeout(self, now: float, core: Endpoint) -> list[Event]:
        ...


@dataclass(frozen=True, slots=True)
class EndpointSettings:
    server: str  # Server / User-Agent header value
    supported: frozenset[str] = SUPPORTED
    accept: str = "application/sdp, multipart/alternative"
    retry_after: int = 30  # seconds, on 503 while draining or overloaded


class Endpoint:
    def __init__(
        self,
        settings: EndpointSettings,
        *,
        timers: Timers = DEFAULT,
        handler: CallHandler | None = None,
        clock_tag: Callable[[], str] = new_tag,
    ) -> None:
        self.settings = settings
        self.transactions = TransactionLayer(timers, server=settings.server, new_tag=clock_tag)
        self.handler = handler
        self.draining = False
        self._tag = clock_tag
        self.counters: dict[str, int] = {}
        methods = {"OPTIONS", "ACK", "CANCEL"} | (handler.methods if handler else set())
        self.allow = ", ".join(sorted(methods))
        self._options_headers = (
            ("Allow", self.allow),
            ("Accept", settings.accept),
            ("Supported", ", ".join(sorted(settings.supported))),
            ("Server", settings.server),
        )

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1

    # -- input ---------------------------------------------------------------------------
    def receive(
        self, data: bytes, peer: Peer, framing: FramingError | None, now: float
    ) -> list[Event]:
        """One message from the transport; returns what to send and what happened."""
        if framing is not None:
            return self._refuse(data, peer, SipParseError(framing.status_hint, framing.reason))
        try:
            message = parse_message(data, datagram=not peer.reliable)
        except SipParseError as exc:
            return self._refuse(data, peer, exc)
        try:
            if isinstance(message, Response):
                self._count(f"responses_in:{message.status}")
                return self._dispatch(self.transactions.receive_response(message, peer, now), now)
            self._count(f"requests_in:{message.method}")
            return self._request(message, peer, now)
        except SipRequestError as exc:
            assert isinstance(message, Request)
            return self._answer_stateless(message, peer, exc.status_hint, exc.reason, exc.headers)
        except SipParseError as exc:
            return self._refuse(data, peer, exc)

    def _refuse(self, data: bytes, peer: Peer, exc: SipError) -> list[Event]:
        self._count(f"parse_errors:{exc.status_hint}")
        response = error_response(data, exc, self._tag(), (peer.host, peer.port))
        if response is None:
            log.info("message_dropped", peer=_fmt(peer), reason=str(exc), size=len(data))
            return []
        log.info("request_refused", peer=_fmt(peer), status=response.status,
                 reason=response.reason)
        self._stamp(response)
        return [Send(response.to_bytes(), response_peer(response, peer), response)]

    def _answer_stateless(
        self, request: Request, peer: Peer, status: int, reason: str,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> list[Event]:
        if request.method == "ACK":
            return []
        log.info("request_refused", peer=_fmt(peer), method=request.method, status=status,
                 reason=reason, call_id=request.call_id)
        response = make_response(request, status, reason, to_tag=self._tag(),
                                 headers=(*headers, ("Server", self.settings.server)))
        return [Send(response.to_bytes(), response_peer(request, peer), response)]

    def _request(self, request: Request, peer: Peer, now: float) -> list[Event]:
        stamp_received(request, peer.host, peer.port)
        check_request(
            request,
            supported=self.settings.supported,
            forwarding=request.method == "INVITE" and request.to.tag is None,
        )
        if request.method == "OPTIONS" and request.to.tag is None:
            # Health probes are answered statelessly (RFC 3261 8.2.7), as proxies do: no
            # transaction to keep for 32 s per probe, and a retransmission gets the same
            # answer because the To tag is derived from the request.
            response = self.options_response(request, stateless_tag(request))
            self._count("responses_out:200")
            return [Send(response.to_bytes(), response_peer(request, peer), response)]
        events = self.transactions.receive_request(request, peer, now)
        return self._dispatch(events, now)

    # -- TU ------------------------------------------------------------------------------
    def _dispatch(self, events: list[Event], now: float) -> list[Event]:
        out: list[Event] = []
        for event in events:
            if isinstance(event, RequestReceived):
                out.extend(self._new_request(event, now))
            elif isinstance(event, Send):
                out.append(event)
            elif self.handler is not None and isinstance(event, _FOR_HANDLER):
                out.extend(self._dispatch(self.handler.on_event(event, now, self), now))
            if isinstance(event, TransactionTimeout):
                self._count(f"transaction_timeouts:{event.timer}")
                log.info("transaction_timeout", timer=event.timer,
                         method=event.transaction.request.method,
                         call_id=event.transaction.request.call_id)
        return out

    def _new_request(self, event: RequestReceived, now: float) -> list[Event]:
        request = event.request
        method = request.method
        txn = event.transaction
        if self.draining and request.to.tag is None:
            response = make_response(
                request, 503, "Service Unavailable (node is shutting down)",
                to_tag=self._tag(), headers=(("Retry-After", str(self.settings.retry_after)),),
            )
            return self.respond(request, txn, response, now)
        if self.handler is not None and method in self.handler.methods:
            return self._dispatch(self.handler.on_event(event, now, self), now)
        if method in KNOWN_METHODS:
            if request.to.tag is not None and method in ("BYE", "INFO", "UPDATE", "NOTIFY"):
                response = make_response(request, 481)
            else:
                response = make_response(
                    request, 405, to_tag=self._tag(), headers=(("Allow", self.allow),)
                )
        else:
            response = make_response(
                request, 501, to_tag=self._tag(), headers=(("Allow", self.allow),)
            )
        return self.respond(request, txn, response, now)

    def new_tag(self) -> str:
        return self._tag()

    def options_response(self, request: Request, to_tag: str) -> Response:
        return make_response(request, 200, to_tag=to_tag,
                             headers=self._options_headers + _keep_alive(request))

    def respond(
        self, request: Request, txn: ServerTransaction, response: Response, now: float
    ) -> list[Event]:
        self._stamp(response)
        for name, value in _keep_alive(request):
            if name not in response.headers:
                response.headers.add(name, value)
                response.changed()
        self._count(f"responses_out:{response.status}")
        return self.transactions.respond(txn, response, now)

    def send_request(
        self, request: Request, peer: Peer, now: float, tu_data: object = None
    ) -> tuple[ClientTransaction, list[Event]]:
        """A request of ours in a new client transaction; its responses and timeout come
        back to the handler with `tu_data` on the transaction."""
        if "User-Agent" not in request.headers:
            request.headers.add("User-Agent", self.settings.server)
            request.changed()
        self._count(f"requests_out:{request.method}")
        return self.transactions.send_request(request, peer, now, tu_data)

    def _stamp(self, response: Response) -> None:
        if "Server" not in response.headers:
            response.headers.add("Server", self.settings.server)
            response.changed()

    # -- time ----------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        deadline = self.transactions.next_deadline()
        if self.handler is None:
            return deadline
        mine = self.handler.next_deadline()
        return mine if deadline is None or (mine is not None and mine < deadline) else deadline

    def transport_failed(self, peer: Peer, now: float) -> list[Event]:
        """A message to `peer` could not be delivered: what waited on it fails now."""
        return self._dispatch(self.transactions.transport_failed(peer, now), now)

    def handle_timeout(self, now: float) -> list[Event]:
        events = self._dispatch(self.transactions.handle_timeout(now), now)
        if self.handler is not None:
            events += self._dispatch(self.handler.handle_timeout(now, self), now)
        return events

    @property
    def busy(self) -> bool:
        """Transactions still waiting for a final response (a drain waits for them)."""
        return self.transactions.pending() > 0


# A tuple, built once: `A | B | ...` in the call built a union object per event.
_FOR_HANDLER = (AckReceived, CancelReceived, ResponseReceived, StrayResponse, TransactionTimeout)


def _keep_alive(request: Request) -> tuple[tuple[str, str], ...]:
    """[MS-CONMGMT]: a Lync hop asking `ms-keep-alive: UAC;hop-hop=yes` is told that this
    hop takes its keep-alives (it sends none itself) and how often it wants them; Lync
    closes connections whose peer never answers the header."""
    value = request.headers.get("ms-keep-alive")
    if value is None or not value.lstrip().upper().startswith("UAC"):
        return ()
    return (("ms-keep-alive", "UAS; tcp=no; hop-hop=yes; end-point=no; timeout=300"),)


def stateless_tag(request: Request) -> str:
    """A To tag that is the same for every retransmission of `request` (RFC 3261 16.11).

    Python's hash of the fields that identify the request: keyed per process (SipHash), so
    not predictable from outside, and several times cheaper than a digest. Retransmissions
    reach the process that answered; after a restart a probe may get another tag, which no
    dialog depends on (only stateless OPTIONS answers use it)."""
    via = request.top_via
    key = (request.call_id, request.from_.tag, via.branch, via.host, via.port, request.cseq.seq)
    return f"{hash(key) & 0xFFFFFFFFFFFF:012x}"


def _fmt(peer: Peer) -> str:
    return f"{peer.transport.lower()}:{peer.host}:{peer.port}"
