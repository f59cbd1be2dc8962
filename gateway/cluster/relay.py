"""Calls between nodes, the half of the node holding the device's flow: a proxy in front of
call control.

Node A places a call for a device registered at node B as it places any call, to B's
node-to-node listener (mutual TLS under the cluster's CA); the INVITE's Request-URI is the
contact the device registered. B recognises it by both: it came over a trusted link (a
connection whose peer proved a certificate under the cluster's CA) and names a contact
whose flow B holds. B does not route it again: it passes it on over the device's flow (the
REGISTER's connection or NAT-ed source, which only B can reach) as a transaction-stateful
proxy (RFC 3261 16), adding two Record-Route entries (RFC 5658 double record-routing, one
for each side): the device's side names the node the call came from (`lg-from`), the
cluster's side the device's flow (`lg-flow`, under an HMAC only this process can make). Both
carry `lgr=<this node>`. In-dialog requests then come back through B: from A (over a
trusted link) they go to the flow the entry names, from the device to A's node-to-node
listener. Responses go back the way their request came; a CANCEL follows its INVITE.

Everything else (requests that name none of this, and every response to a transaction it
did not start) goes to the handler behind it: call control.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway import logs
from gateway.calls.teardown import cancel_for
from gateway.cluster.bindings import SharedBindings
from gateway.cluster.view import ClusterView
from gateway.sip.endpoint import CallHandler, Endpoint
from gateway.sip.errors import SipParseError
from gateway.sip.headers import split_list
from gateway.sip.message import Headers, Request, Response, make_response, new_branch
from gateway.sip.transaction_layer import (
    AckReceived,
    CancelReceived,
    Event,
    RequestReceived,
    ResponseReceived,
    TransactionLayer,
    TransactionTimeout,
)
from gateway.sip.transaction_machines import ServerTransaction, State
from gateway.sip.uri import SipUri
from gateway.transport.peer import Peer, Transport

log = logs.get(__name__)

ME, FROM, FLOW = "lgr", "lg-from", "lg-flow"


@dataclass(frozen=True, slots=True)
class Hop:
    """How this node is reached: by the cluster's nodes (its node-to-node listener) and by
    a device on each transport (the node's address and listeners)."""

    name: str
    link_host: str
    link_port: int
    via: Callable[[Transport, str], str]  # Local.via: the Via sent-by toward a peer
    record: Callable[[Transport, str], str]  # the host:port a peer reaches this node at


@dataclass(slots=True)
class Forwarded:
    """A request passed on: where it came in and what went out (`request`, to `peer`)."""

    inbound: ServerTransaction
    origin: Request
    request: Request
    peer: Peer


@dataclass(frozen=True, slots=True)
class CancelSent:
    """A CANCEL passed on after its INVITE: its answer is nobody's business here."""


class LinkRelay:
    """The `CallHandler` the endpoint calls: this proxy first, `inner` (call control) for
    the rest. `trusted(peer)` says whether a message came over a trusted link."""

    def __init__(self, inner: CallHandler, hop: Hop, bindings: SharedBindings,
                 view: ClusterView, trusted: Callable[[Peer], bool],
                 clock: Callable[[], float] = time.time) -> None:
        self.inner = inner
        self.hop = hop
        self.bindings = bindings
        self.view = view
        self.trusted = trusted
        self.clock = clock
        self.methods = inner.methods
        self._secret = secrets.token_bytes(32)  # flows die with the process, tokens too
        self.relayed = 0

    def next_deadline(self) -> float | None:
        return self.inner.next_deadline()

    def handle_timeout(self, now: float, core: Endpoint) -> list[Event]:
        return self.inner.handle_timeout(now, core)

    # -- events ---------------------------------------------------------------------------
    def on_event(self, event: Event, now: float, core: Endpoint) -> list[Event]:
        if isinstance(event, RequestReceived):
            handled = self._request(event.request, event.transaction, now, core)
            if handled is not None:
                return handled
        elif isinstance(event, AckReceived):
            found = self._next_hop(event.request, event.peer)
            if found is not None:
                request, peer = found
                return TransactionLayer.send_stateless(request, peer) if peer else []
        elif isinstance(event, ResponseReceived | TransactionTimeout):
            mark = event.transaction.tu_data
            if isinstance(mark, CancelSent):
                return []
            if isinstance(mark, Forwarded):
                if isinstance(event, ResponseReceived):
                    return self._response(mark, event.response, now, core)
                if event.transaction is not mark.inbound:
                    return self._gave_up(mark, event.timer, now, core)
                return []
        elif isinstance(event, CancelReceived):
            mark = event.invite.tu_data
            if isinstance(mark, Forwarded):
                return core.send_request(cancel_for(mark.request), mark.peer, now,
                                         tu_data=CancelSent())[1]
        return self.inner.on_event(event, now, core)

    def _request(self, request: Request, txn: ServerTransaction, now: float,
                 core: Endpoint) -> list[Event] | None:
        """A request this relay passes on or refuses; None: call control's."""
        source = txn.peer
        found = self._next_hop(request, source)
        if found is None and self.trusted(source) and request.method == "INVITE" \
                and request.to.tag is None:
            found = self._to_device(request, source, now)
        if found is None:
            return None
        forwarded, peer = found
        if peer is None:
            return core.respond(request, txn, make_response(
                request, 480, "Temporarily Unavailable (the device's flow is not held here)",
                to_tag=core.new_tag()), now)
        if request.max_forwards == 0:
            return core.respond(request, txn, make_response(request, 483, to_tag=core.new_tag()),
                                now)
        mark = Forwarded(txn, request, forwarded, peer)
        txn.tu_data = mark
        self.relayed += 1
        return core.send_request(forwarded, peer, now, tu_data=mark)[1]

    def _to_device(self, request: Request, source: Peer, now: float
                   ) -> tuple[Request, Peer | None]:
        """A call another node placed to a device: over its flow, record-routed both ways.
        Peer None: no flow for it here (the device went, or registered elsewhere since)."""
        binding = self.bindings.held(request.uri_text, self.clock())
        caller = self.view.at(source.host)
        if binding is None or caller is None:
            log.info("cluster_call_not_held", call_id=request.call_id, uri=request.uri_text,
                     source=source.host, node=caller)
            return request, None
        flow = binding.peer
        towards = f"{flow.transport}/{flow.host}/{flow.port}"
        device_side = (f"<sip:{self.hop.record(flow.transport, flow.host)};transport="
                       f"{flow.transport.lower()};lr;{ME}={self.hop.name};{FROM}={caller}>")
        link_side = (f"<sip:{self.hop.link_host}:{self.hop.link_port};transport=tls;lr;"
                     f"{ME}={self.hop.name};{FLOW}={self._token(towards)}>")
        forwarded = self._pass_on(request, 0, flow)
        forwarded.headers.add("Record-Route", link_side, first=True)
        forwarded.headers.add("Record-Route", device_side, first=True)
        forwarded.changed()
        log.info("cluster_call_relayed", call_id=request.call_id, node=caller,
                 flow=f"{flow.transport.lower()}:{flow.host}:{flow.port}")
        return forwarded, flow

    def _next_hop(self, request: Request, source: Peer) -> tuple[Request, Peer | None] | None:
        """A request on a dialog this node record-routed: the routes that are this node's
        taken off, toward the flow (from a trusted link) or toward the node the call came
        from (from the device). None: no route of this node's on it."""
        try:
            routes = request.routes
        except SipParseError:
            return None
        ours = 0
        params: dict[str, str] = {}
        for route in routes:
            uri = route.uri
            if not isinstance(uri, SipUri) or uri.param(ME) != self.hop.name:
                break
            ours += 1
            for name in (FROM, FLOW):
                value = uri.param(name)
                if value:
                    params[name] = value
        if not ours:
            return None
        peer: Peer | None = None
        if self.trusted(source):
            peer = self._flow(params.get(FLOW, ""))
        elif request.to.tag is not None:
            link = self.view.link(params.get(FROM, ""))
            peer = None if link is None else Peer(Transport.TLS, *link)
        if peer is None:
            log.info("cluster_route_refused", call_id=request.call_id, method=request.method,
                     trusted=self.trusted(source))
            return request, None
        return self._pass_on(request, ours, peer), peer

    def _pass_on(self, request: Request, ours: int, peer: Peer | None) -> Request:
        """A copy of `request` for the next hop: this node's routes off, one hop fewer,
        this node's Via on top."""
        headers = Headers()
        skip = ours
        for name, value in request.headers:
            if skip and name.lower() == "route":
                entries = split_list(value)
                dropped = min(skip, len(entries))
                skip -= dropped
                if dropped == len(entries):
                    continue
                value = ", ".join(entries[dropped:])
            if name.lower() == "max-forwards":
                value = str(max(0, (request.max_forwards or 70) - 1))
            headers.add(name, value)
        forwarded = Request(request.method, request.uri_text, headers, request.body)
        if peer is not None:
            via = (f"SIP/2.0/TLS {self.hop.link_host}:{self.hop.link_port}"
                   if self.view.is_link(peer.host, peer.port)
                   else self.hop.via(peer.transport, peer.host))
            forwarded.headers.add("Via", f"{via};branch={new_branch()};rport", first=True)
        forwarded.changed()
        return forwarded

    def _response(self, mark: Forwarded, response: Response, now: float,
                  core: Endpoint) -> list[Event]:
        """A response of the next hop: back where the request came from, without our Via."""
        if response.status == 100 or mark.inbound.state not in (
                State.TRYING, State.PROCEEDING, State.ACCEPTED):
            return []
        headers = Headers()
        dropped = False
        for name, value in response.headers:
            if not dropped and name.lower() in ("via", "v"):
                dropped = True
                rest = split_list(value)[1:]
                if not rest:
                    continue
                value = ", ".join(rest)
            headers.add(name, value)
        back = Response(response.status, response.reason, headers, response.body)
        return core.respond(mark.origin, mark.inbound, back, now)

    def _gave_up(self, mark: Forwarded, timer: str, now: float,
                 core: Endpoint) -> list[Event]:
        if mark.inbound.state not in (State.TRYING, State.PROCEEDING):
            return []
        status, reason = (480, "Temporarily Unavailable (the device's flow is gone)") \
            if timer == "transport" else (408, "Request Timeout")
        log.info("cluster_relay_failed", call_id=mark.origin.call_id, status=status,
                 timer=timer)
        return core.respond(mark.origin, mark.inbound, make_response(
            mark.origin, status, reason, to_tag=core.new_tag()), now)

    # -- flow tokens ----------------------------------------------------------------------
    def _token(self, flow: str) -> str:
        text = base64.urlsafe_b64encode(flow.encode()).decode().rstrip("=")
        return f"{text}.{self._mac(text)}"

    def _flow(self, token: str) -> Peer | None:
        """The flow a token of ours names; None for anything this process did not make."""
        text, _, mac = token.partition(".")
        if not text or not hmac.compare_digest(mac, self._mac(text)):
            return None
        transport, host, port = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)
                                                         ).decode().split("/")
        return Peer(Transport.parse(transport), host, int(port))

    def _mac(self, text: str) -> str:
        return hmac.new(self._secret, text.encode(), hashlib.sha256).hexdigest()[:24]
