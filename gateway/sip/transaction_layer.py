"""The transaction layer: matches messages to transactions, runs their timers, and tells the
transaction user (TU) what happened (RFC 3261 section 17, RFC 6026).

Sans-I/O in the style of h11: every call returns a list of events; `Send` events carry the
bytes for the transport adapter, the others are for the TU. Time comes in as `now`.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable
from typing import Any

from gateway.frozen import frozen
from gateway.sip.headers import Via
from gateway.sip.message import MAGIC_COOKIE, Message, Request, Response, make_response, new_tag
from gateway.sip.timers import DEFAULT, Timers
from gateway.sip.transaction_machines import (
    Action,
    ClientTransaction,
    Send,
    ServerTransaction,
    State,
    TimedOut,
    TimerName,
    ToTU,
    Transaction,
)
from gateway.transport.peer import Peer


# -- events for the TU ---------------------------------------------------------------------
@frozen
class RequestReceived:
    """A new request; answer it with `TransactionLayer.respond(txn, ...)`."""

    request: Request
    transaction: ServerTransaction


@frozen
class AckReceived:
    """An ACK for a 2xx (end to end, dialog business) or one no transaction wanted."""

    request: Request
    peer: Peer


@frozen
class CancelReceived:
    """A CANCEL matched a pending INVITE; the layer already answered the CANCEL with 200,
    whose To tag the INVITE's responses are then given (`TransactionLayer.respond`).
    The TU should answer the INVITE with 487 unless it already sent a final response."""

    request: Request
    invite: ServerTransaction


@frozen
class ResponseReceived:
    response: Response
    transaction: ClientTransaction


@frozen
class StrayResponse:
    """A response no client transaction is waiting for (e.g. a 2xx retransmitted after
    Timer M): a UA core re-sends its ACK for it from the dialog."""

    response: Response
    peer: Peer


@frozen
class TransactionTimeout:
    """Timer B/F (no final response: treat as 408), H (no ACK for our final response), or
    "transport" (the request could not be delivered: treat as 503, RFC 3261 8.1.3.1)."""

    transaction: Transaction
    timer: TimerName


Event = (
    Send
    | RequestReceived
    | AckReceived
    | CancelReceived
    | ResponseReceived
    | StrayResponse
    | TransactionTimeout
)
AnyTransaction = ClientTransaction | ServerTransaction


def response_peer(request: Message, source: Peer) -> Peer:
    """Where responses to `request` go (RFC 3261 section 18.2.2, RFC 3581); a response
    built for it, with the same top Via, says the same.

    Reliable transports answer on the connection the request came in on. Over UDP the source
    address is used when the client asked for rport, else the Via sent-by port (default 5060)
    at the source address, which the transport recorded as `received`.
    """
    return via_peer(request.top_via, source)


def via_peer(via: Via, source: Peer) -> Peer:
    """`response_peer` for a response whose top Via is `via`."""
    if source.reliable:
        return source
    if via.wants_rport:
        return source
    maddr = via.maddr
    host = maddr if maddr else source.host
    port = via.port or 5060
    if host == source.host and port == source.port:
        return source  # the usual case, without a new Peer per response
    return Peer(source.transport, host, port)


def server_key(request: Request, method: str | None = None) -> tuple[Any, ...]:
    """Matching key of section 17.2.3; RFC 2543 fallback for branches without the cookie.

    ACK maps to its INVITE; CANCEL keeps its own method (it is its own transaction), and
    `method="INVITE"` gives the key of the INVITE a CANCEL targets."""
    via = request.top_via
    if method is None:
        method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch
    if branch and branch.startswith(MAGIC_COOKIE):
        return (branch, via.host, via.port, method)
    return (
        "rfc2543",
        request.uri_text,
        request.from_.tag,
        request.call_id,
        request.cseq.seq,
        method,
        via.host,
        via.port,
        branch,
    )


def client_key(branch: str, method: str) -> tuple[str, str]:
    return (branch, "INVITE" if method == "ACK" else method)


class TransactionLayer:
    def __init__(
        self, timers: Timers = DEFAULT, *, server: str = "",
        new_tag: Callable[[], str] = new_tag,
    ) -> None:
        """`server`: the Server header of the responses the layer builds itself (100, 482,
        and those to CANCEL); `new_tag` makes their To tags."""
        self.timers = timers
        self._headers = (("Server", server),) if server else ()
        self._new_tag = new_tag
        self._server: dict[tuple[Any, ...], ServerTransaction] = {}
        self._client: dict[tuple[Any, ...], ClientTransaction] = {}
        # (from tag, Call-ID, CSeq) of requests without a To tag, for merged-request detection.
        self._merge: dict[tuple[Any, ...], ServerTransaction] = {}
        self._heap: list[tuple[float, int, AnyTransaction, TimerName]] = []
        self._seq = itertools.count()
        # Settled or ended transactions whose `tu_data` goes at the next message or timer:
        # the TU reads it from the event the transaction's last step produced.
        self._release: list[AnyTransaction] = []

    # -- introspection -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._server) + len(self._client)

    def pending(self) -> int:
        """Transactions still waiting for a final response (a drain waits for these; the
        others only absorb retransmissions until their timers end)."""
        waiting = (State.CALLING, State.TRYING, State.PROCEEDING)
        return sum(1 for t in (*self._server.values(), *self._client.values())
                   if t.state in waiting)

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap:
            deadline, _, txn, name = heap[0]
            if txn.deadlines.get(name) == deadline:
                return deadline
            heapq.heappop(heap)  # stale: the timer was cancelled or re-armed
        return None

    # -- inbound -------------------------------------------------------------------------
    def has_server(self, key: tuple[Any, ...]) -> bool:
        """Whether the request with this `server_key` belongs to a server transaction
        already (a retransmission)."""
        return key in self._server

    def receive_request(self, request: Request, source: Peer, now: float) -> list[Event]:
        """A parsed, validated request from the transport."""
        self._let_go()
        key = server_key(request)
        method = request.method
        if method == "ACK":
            txn = self._server.get(key)
            if txn is None:
                return [AckReceived(request, source)]
            return self._run(txn, txn.ack(request, now), now)
        existing = self._server.get(key)
        if existing is not None:
            return self._run(existing, existing.retransmission(now), now)
        if method == "CANCEL":
            return self._cancel(request, source, now)
        merged = self._merged(request)
        txn = ServerTransaction(
            key=key,
            origin=request,
            peer=response_peer(request, source),
            timers=self.timers,
            state=State.TRYING,
        )
        txn.start()
        if merged is not None:
            # Section 8.2.2.2: same request by another path; answer 482 and keep the first.
            self._server[key] = txn
            response = self._response(request, 482, self._new_tag())
            return self._run(txn, txn.respond(response, now), now)
        self._server[key] = txn
        merge_key = txn.merge_key = _merge_key(request)
        if merge_key is not None:
            self._merge[merge_key] = txn
        out: list[Event] = []
        if method == "INVITE":
            # Answer at once: Lync and proxies retransmit until they see a provisional. It
            # goes out before the TU acts, so it never follows a final response.
            out.extend(self._run(txn, txn.respond(self._response(request, 100), now), now))
        out.append(RequestReceived(request, txn))
        return out

    def _merged(self, request: Request) -> ServerTransaction | None:
        merge_key = _merge_key(request)
        return None if merge_key is None else self._merge.get(merge_key)

    def _cancel(self, request: Request, source: Peer, now: float) -> list[Event]:
        invite = self._server.get(server_key(request, "INVITE"))
        txn = ServerTransaction(
            key=server_key(request),
            origin=request,
            peer=response_peer(request, source),
            timers=self.timers,
            state=State.TRYING,
        )
        txn.start()
        self._server[txn.key] = txn
        if invite is None:
            response = self._response(request, 481, self._new_tag())
            return self._run(txn, txn.respond(response, now), now)
        # Section 9.2: the 200 carries the To tag of the INVITE's responses.
        response = self._response(request, 200, self._local_tag(invite))
        out = self._run(txn, txn.respond(response, now), now)
        if invite.state is State.PROCEEDING:
            out.append(CancelReceived(request, invite))
        return out

    def _local_tag(self, invite: ServerTransaction) -> str:
        """The To tag of `invite`'s responses: the request's own (a re-INVITE), the one its
        responses carried, or, before the TU sent one, a tag chosen here that the TU's
        responses will be given."""
        if invite.to_tag is None:
            invite.keep_tag()
        if invite.to_tag is None:
            invite.to_tag = self._new_tag()
        return invite.to_tag

    def _response(self, request: Request, status: int, to_tag: str | None = None) -> Response:
        return make_response(request, status, to_tag=to_tag, headers=self._headers)

    def receive_response(self, response: Response, source: Peer, now: float) -> list[Event]:
        self._let_go()
        via = response.top_via
        branch = via.branch or ""
        txn = self._client.get(client_key(branch, response.cseq.method))
        if txn is None:
            return [StrayResponse(response, source)]
        return self._run(txn, txn.receive(response, now), now)

    # -- outbound ------------------------------------------------------------------------
    def send_request(
        self, request: Request, peer: Peer, now: float, tu_data: Any = None
    ) -> tuple[ClientTransaction, list[Event]]:
        """Start a client transaction; the request's top Via must carry a fresh branch."""
        if request.method == "ACK":
            raise ValueError("an ACK is not a transaction: send it with send_stateless")
        branch = request.top_via.branch or ""
        txn = ClientTransaction(
            key=client_key(branch, request.method),
            origin=request,
            peer=peer,
            timers=self.timers,
            state=State.TRYING,
            tu_data=tu_data,
        )
        self._client[txn.key] = txn
        return txn, self._run(txn, txn.start(now), now)

    def respond(self, txn: ServerTransaction, response: Response, now: float) -> list[Event]:
        tag = txn.to_tag
        if tag is not None and response.status > 100 and response.to.tag != tag:
            # The 200 to a CANCEL already showed the peer this request's tag (section 9.2).
            response.set_header("To", str(response.to.with_tag(tag)))
        return self._run(txn, txn.respond(response, now), now)

    @staticmethod
    def send_stateless(message: Request | Response, peer: Peer) -> list[Event]:
        """ACK for a 2xx, 2xx retransmissions by a UAS core: no transaction owns them."""
        return [Send(message.to_bytes(), peer, message)]

    def transport_failed(self, peer: Peer, now: float) -> list[Event]:
        """The transport could not reach `peer`: its client transactions fail at once
        rather than at Timer B/F."""
        address = (peer.transport, peer.host, peer.port)
        out: list[Event] = []
        for txn in [t for t in self._client.values()
                    if (t.peer.transport, t.peer.host, t.peer.port) == address]:
            out.extend(self._run(txn, txn.transport_failed(), now))
        return out

    # -- time ----------------------------------------------------------------------------
    def handle_timeout(self, now: float) -> list[Event]:
        self._let_go()
        out: list[Event] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, txn, name = heapq.heappop(heap)
            if txn.deadlines.get(name) != deadline:
                continue
            out.extend(self._run(txn, txn.fire(name, now), now))
        return out

    # -- plumbing ------------------------------------------------------------------------
    def _run(self, txn: AnyTransaction, actions: Iterable[Action], now: float) -> list[Event]:
        out: list[Event] = []
        for action in actions:
            if isinstance(action, Send):
                out.append(action)
            elif isinstance(action, ToTU):
                message = action.message
                if isinstance(message, Response):
                    assert isinstance(txn, ClientTransaction)
                    out.append(ResponseReceived(message, txn))
                else:
                    out.append(AckReceived(message, txn.peer))
            elif isinstance(action, TimedOut):
                out.append(TransactionTimeout(txn, action.timer))
        if (txn.terminated or txn.settled) and txn.tu_data is not None:
            self._release.append(txn)
        armed = txn.armed
        if txn.terminated:
            self._forget(txn)
        elif armed:
            heap, seq = self._heap, self._seq
            for deadline, name in armed:
                heapq.heappush(heap, (deadline, next(seq), txn, name))
        armed.clear()
        return out

    def _let_go(self) -> None:
        """The TU has handled the events of the last message or timer: what it hung on
        transactions that only wait out their timers (often a whole call) is freed by
        reference counting now rather than by the cyclic GC after 32 s."""
        for txn in self._release:
            txn.tu_data = None
        self._release.clear()

    def _forget(self, txn: AnyTransaction) -> None:
        table: dict[tuple[Any, ...], Any] = (
            self._client if isinstance(txn, ClientTransaction) else self._server
        )
        if table.get(txn.key) is txn:
            del table[txn.key]
        merge_key = txn.merge_key if isinstance(txn, ServerTransaction) else None
        if merge_key is not None and self._merge.get(merge_key) is txn:
            del self._merge[merge_key]


def _merge_key(request: Request) -> tuple[Any, ...] | None:
    """Identity of an out-of-dialog request across paths (section 8.2.2.2)."""
    if request.to.tag is not None or request.from_.tag is None:
        return None
    return (request.from_.tag, request.call_id, request.cseq.seq, request.method)
