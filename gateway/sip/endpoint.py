"""The node's SIP core: bytes in, bytes out, and the answers the node gives by itself.

`Endpoint` parses, validates, runs the transaction layer, stamps Via `received`/`rport`
(RFC 3581), answers OPTIONS (Lync pools and proxies probe with it), 405 for methods this node
does not take, 501 for methods it does not know, and hands INVITE and dialog requests to a
`CallHandler` (the B2BUA). Sans-I/O: the asyncio adapter is `gateway.daemon.node`.

Nothing raised while one message (or one timer tick) is handled leaves `receive`,
`handle_timeout` or `transport_failed`: the node serves every other call from the same loop,
and an exception out of its message handler would lose the answer to this request and
whatever else that batch of events carried. A refusal (`SipError`) raised for a request
still waiting for its answer becomes that answer; anything else is logged once with the
Call-ID, answered 500 where a request waits, and counted as `internal_errors`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from gateway import logs
from gateway.sip.errors import SipError, SipParseError, SipRequestError
from gateway.sip.glance import SHED_TAG_PREFIX, Glance, glance, header_value
from gateway.sip.headers import Via
from gateway.sip.message import (
    Request,
    Response,
    make_response,
    new_tag,
    received_via,
    stamp_received,
)
from gateway.sip.overload import DIALOG_CREATING, OverloadControl
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
    server_key,
    via_peer,
)
from gateway.sip.transaction_machines import ClientTransaction, Send, ServerTransaction, State
from gateway.sip.validate import KNOWN_METHODS, SUPPORTED, check_request
from gateway.transport.errors import FramingError
from gateway.transport.peer import Peer

log = logs.get(__name__)

__all__ = ["KNOWN_METHODS", "CallHandler", "Endpoint", "EndpointSettings", "stateless_tag"]


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
        self.overload = OverloadControl()
        self._tag = clock_tag
        self.counters: dict[str, int] = {}
        methods = {"OPTIONS", "ACK", "CANCEL"} | (handler.methods if handler else set())
        self.allow = ", ".join(sorted(methods))
        self._known = KNOWN_METHODS | methods
        # Counter keys by method, built once: a method name is chosen by the peer, and each
        # new one would be a new counter and a new label value of a metric for ever.
        self._method_keys = {m: f"requests_in:{m}" for m in self._known}
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
        message: Request | Response | None = None
        try:
            if framing is not None:
                exc = SipParseError(framing.status_hint, framing.reason)
                return self._refuse(data, peer, exc)
            screened = False
            overload = self.overload
            if overload.shedding or overload.last_cut is not None:
                seen = glance(data)
                if seen is not None:
                    quick = self._screen(seen, peer, now)
                    if quick is not None:
                        return quick
                    screened = seen.method in DIALOG_CREATING and seen.to_tag is None
            try:
                message = parse_message(data, datagram=not peer.reliable)
            except SipParseError as exc:
                return self._refuse(data, peer, exc)
            try:
                if isinstance(message, Response):
                    self._count(f"responses_in:{message.status}")
                    events = self.transactions.receive_response(message, peer, now)
                    return self._dispatch(events, now)
                self._count(self._method_keys.get(message.method, "requests_in:other"))
                return self._request(message, peer, now, screened=screened)
            except SipRequestError as exc:
                if not isinstance(message, Request):
                    raise  # a refusal of a response is no answer: the boundary logs it
                return self._answer_stateless(
                    message, peer, exc.status_hint, exc.reason, exc.headers)
            except SipParseError as exc:
                return self._refuse(data, peer, exc)
        except Exception as exc:  # the boundary: see the module docstring
            return self._crashed("receive", exc, message, peer)

    def _crashed(
        self, where: str, exc: Exception, message: Request | Response | None = None,
        peer: Peer | None = None,
    ) -> list[Event]:
        """An exception the handling of one message or tick did not expect: logged once,
        counted, and a request that came with it answered 500 (statelessly: whatever failed
        may have been the transaction layer)."""
        self._count("internal_errors")
        call_id = message.headers.get("Call-ID") if message is not None else None
        log.error("sip_internal_error", where=where, call_id=call_id,
                  error=f"{type(exc).__name__}: {exc}"[:200], exc_info=exc)
        if not isinstance(message, Request) or message.method == "ACK" or peer is None:
            return []
        try:
            response = make_response(message, 500, "Server Internal Error", to_tag=self._tag())
            self._stamp(response)
            self._count("responses_out:500")
            return [Send(response.to_bytes(), _response_peer(response, peer), response)]
        except Exception:  # no 500 for a request that cannot be answered
            return []

    def _refuse(self, data: bytes, peer: Peer, exc: SipError) -> list[Event]:
        self._count(f"parse_errors:{exc.status_hint}")
        response = error_response(data, exc, self._tag(), (peer.host, peer.port))
        if response is None:
            log.info("message_dropped", peer=_fmt(peer), reason=str(exc), size=len(data))
            return []
        log.info("request_refused", peer=_fmt(peer), status=response.status,
                 reason=response.reason)
        self._stamp(response)
        return [Send(response.to_bytes(), _response_peer(response, peer), response)]

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

    def _screen(self, seen: Glance, peer: Peer, now: float) -> list[Event] | None:
        """While shedding, from the raw request: what to send for a refused new dialog, []
        for the ACK of an earlier refusal, None for what goes the full way (a new dialog
        admitted among them)."""
        if seen.method == "ACK":
            if seen.to_tag is not None and seen.to_tag.startswith(SHED_TAG_PREFIX):
                self._count("acks_absorbed")
                return []
            return None
        if seen.method not in DIALOG_CREATING or seen.to_tag is not None:
            return None
        key = seen.key
        if key is None or self.transactions.has_server(key) or self.overload.admit():
            return None
        via = received_via(seen.top_via, peer.host, peer.port) or seen.top_via
        feedback = self.overload.feedback(now)
        if feedback is not None:
            via = _feedback_via(via, feedback)
        tag = shed_tag(seen.top_via.branch, header_value(seen.call_id), header_value(seen.cseq))
        data = b"\r\n".join((
            f"SIP/2.0 503 {self._shed_reason()}".encode(), b"Via: " + str(via).encode(),
            *seen.vias[1:], seen.from_, seen.to + b";tag=" + tag.encode(), seen.call_id,
            seen.cseq, b"Retry-After: %d" % self.settings.retry_after,
            f"Server: {self.settings.server}".encode(), b"Content-Length: 0", b"", b""))
        self._count("responses_out:503")
        return [Send(data, via_peer(via, peer))]

    def _request(self, request: Request, peer: Peer, now: float, *,
                 screened: bool = False) -> list[Event]:
        """`screened`: a new dialog the glance has admitted already."""
        stamp_received(request, peer.host, peer.port)
        overload = self.overload
        if (overload.shedding and not screened and request.method in DIALOG_CREATING
                and request.to.tag is None
                and not self.transactions.has_server(server_key(request))
                and not overload.admit()):
            return self._shed(request, peer, now)
        check_request(
            request,
            supported=self.settings.supported,
            forwarding=request.method == "INVITE" and request.to.tag is None,
            known=self._known,
        )
        if request.method == "OPTIONS" and request.to.tag is None:
            # Health probes are answered statelessly (RFC 3261 8.2.7), as proxies do: no
            # transaction to keep for 32 s per probe, and a retransmission gets the same
            # answer because the To tag is derived from the request.
            response = self.options_response(request, stateless_tag(request))
            self._count("responses_out:200")
            return [Send(response.to_bytes(), response_peer(request, peer), response)]
        events = self.transactions.receive_request(request, peer, now)
        if overload.shedding or overload.last_cut is not None:
            feedback = overload.feedback(now)
            if feedback is not None:
                events = _with_feedback(events, feedback)  # on the 100 Trying
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
                out.extend(self._dispatch(self._to_handler(event, now), now))
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
            return self._dispatch(self._to_handler(event, now), now)
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

    def _to_handler(self, event: Event, now: float) -> list[Event]:
        """The handler's events for `event`; what it raises ends here, where the request
        it was handling (if any) is known and can still be answered through its
        transaction."""
        assert self.handler is not None
        try:
            return self.handler.on_event(event, now, self)
        except Exception as exc:  # the boundary: see the module docstring
            return self._handler_failed(event, exc, now)

    def _handler_failed(self, event: Event, exc: Exception, now: float) -> list[Event]:
        txn: ServerTransaction | None = None
        if isinstance(event, RequestReceived):
            txn = event.transaction
        elif isinstance(event, CancelReceived):
            txn = event.invite
        request = txn.origin if txn is not None else None
        pending = (txn is not None and request is not None
                   and txn.state in (State.TRYING, State.PROCEEDING))
        if isinstance(exc, SipError) and pending:
            assert txn is not None and request is not None
            # A refusal the handler raised instead of returning (a header it read was
            # malformed): the answer it names, sent through the transaction so that
            # retransmissions get it too.
            log.info("request_refused", method=request.method, status=exc.status_hint,
                     reason=exc.reason, call_id=request.headers.get("Call-ID"))
            headers = exc.headers if isinstance(exc, SipRequestError) else ()
            response = make_response(request, exc.status_hint, exc.reason,
                                     to_tag=self._tag(), headers=headers)
            return self.respond(request, txn, response, now)
        self._count("internal_errors")
        log.error("sip_handler_error", handling=type(event).__name__,
                  call_id=_event_call_id(event),
                  error=f"{type(exc).__name__}: {exc}"[:200], exc_info=exc)
        if not pending:
            return []
        assert txn is not None and request is not None
        response = make_response(request, 500, "Server Internal Error", to_tag=self._tag())
        return self.respond(request, txn, response, now)

    def new_tag(self) -> str:
        return self._tag()

    def options_response(self, request: Request, to_tag: str) -> Response:
        return make_response(request, 200, to_tag=to_tag,
                             headers=self._options_headers + _keep_alive(request))

    def respond(
        self, request: Request, txn: ServerTransaction, response: Response, now: float
    ) -> list[Event]:
        self._stamp(response, now)
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

    def _stamp(self, response: Response, now: float | None = None) -> None:
        if "Server" not in response.headers:
            response.headers.add("Server", self.settings.server)
            response.changed()
        overload = self.overload
        if now is not None and (overload.shedding or overload.last_cut is not None):
            _overload_feedback(response, overload.feedback(now))

    def _shed(self, request: Request, peer: Peer, now: float) -> list[Event]:
        """A new dialog refused for overload: answered statelessly (no transaction, nothing
        kept), told when to come back; its ACK will be absorbed as a stray."""
        via = request.top_via
        tag = shed_tag(via.branch, request.headers.get("Call-ID") or "",
                       request.headers.get("CSeq") or "")
        response = make_response(
            request, 503, self._shed_reason(), to_tag=tag,
            headers=(("Retry-After", str(self.settings.retry_after)),))
        self._stamp(response, now)
        self._count("responses_out:503")
        return [Send(response.to_bytes(), response_peer(request, peer), response)]

    def _shed_reason(self) -> str:
        return f"Service Unavailable (overloaded: {self.overload.reason})"

    # -- time ----------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        deadline = self.transactions.next_deadline()
        if self.handler is None:
            return deadline
        mine = self.handler.next_deadline()
        return mine if deadline is None or (mine is not None and mine < deadline) else deadline

    def transport_failed(self, peer: Peer, now: float) -> list[Event]:
        """A message to `peer` could not be delivered: what waited on it fails now."""
        try:
            return self._dispatch(self.transactions.transport_failed(peer, now), now)
        except Exception as exc:  # the boundary: see the module docstring
            return self._crashed("transport_failed", exc)

    def handle_timeout(self, now: float) -> list[Event]:
        try:
            events = self._dispatch(self.transactions.handle_timeout(now), now)
        except Exception as exc:  # the boundary: see the module docstring
            events = self._crashed("handle_timeout", exc)
        if self.handler is not None:
            # The handler's own timers run even when the transactions' failed, and its
            # failure costs only its own events of this tick.
            try:
                events += self._dispatch(self.handler.handle_timeout(now, self), now)
            except Exception as exc:  # the boundary: see the module docstring
                events += self._crashed("handler_timeout", exc)
        return events

    @property
    def busy(self) -> bool:
        """Transactions still waiting for a final response (a drain waits for them)."""
        return self.transactions.pending() > 0


# A tuple, built once: `A | B | ...` in the call built a union object per event.
_FOR_HANDLER = (AckReceived, CancelReceived, ResponseReceived, StrayResponse, TransactionTimeout)


def _overload_feedback(response: Response, feedback: str | None) -> None:
    """RFC 7339: a client that put `oc` in its Via (it can reduce what it sends) gets the
    node's overload state in the same Via of the response."""
    if feedback is not None:
        via = response.top_via
        with_feedback = _feedback_via(via, feedback)
        if with_feedback is not via:
            response.set_top_via(with_feedback)


def _feedback_via(via: Via, feedback: str) -> Via:
    if not any(name == "oc" for name, _ in via.params):
        return via
    kept = tuple((n, v) for n, v in via.params if not n.startswith("oc"))
    extra = tuple((name, value) for name, _, value in
                  (part.partition("=") for part in feedback.split(";")))
    return via.with_params(kept + extra)


def _with_feedback(events: list[Event], feedback: str) -> list[Event]:
    """The transaction layer's own answers (100 Trying, a retransmitted response) with the
    RFC 7339 feedback their client asked for."""
    out: list[Event] = []
    for event in events:
        if isinstance(event, Send) and isinstance(event.message, Response):
            _overload_feedback(event.message, feedback)
            event = Send(event.message.to_bytes(), event.peer, event.message)
        out.append(event)
    return out


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


def shed_tag(branch: str | None, call_id: str, cseq: str) -> str:
    """The To tag of an overload refusal: the same for every retransmission of the request
    (keyed per process, as `stateless_tag`), and marked so that its ACK is known from the
    raw bytes (`glance.SHED_TAG_PREFIX`)."""
    return f"{SHED_TAG_PREFIX.decode()}{hash((branch, call_id, cseq)) & 0xFFFFFFFFFFFF:012x}"


def _response_peer(response: Response, source: Peer) -> Peer:
    """Where a response goes: as its top Via says, or back to the source when the Via
    cannot be read (a 505 to a SIP/7.0 Via, a 400 to a Via of stray separators): the
    only address there is, and the one a stream transport would answer on anyway."""
    try:
        return response_peer(response, source)
    except SipParseError:
        return source


def _event_call_id(event: Event) -> str | None:
    if isinstance(event, RequestReceived | AckReceived | CancelReceived):
        return event.request.headers.get("Call-ID")
    if isinstance(event, ResponseReceived | StrayResponse):
        return event.response.headers.get("Call-ID")
    if isinstance(event, TransactionTimeout):
        origin = event.transaction.origin
        return origin.headers.get("Call-ID") if origin is not None else None
    return None


def _fmt(peer: Peer) -> str:
    return f"{peer.transport.lower()}:{peer.host}:{peer.port}"
