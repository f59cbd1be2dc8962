"""Dialogs (RFC 3261 section 12): their state, and the requests sent inside them.

A dialog is made by the UAC from a 1xx with a To tag (early) or a 2xx (confirmed), and by the
UAS from the request it answers. It keeps the route set from Record-Route (reversed for the
UAC), the remote target from Contact (refreshed by re-INVITE and UPDATE), and both CSeq
counters. `create_request` builds a request inside the dialog, loose or strict routing as the
route set asks. Pure: no I/O, no clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from gateway.sip.errors import SipRequestError
from gateway.sip.headers import NameAddr, parse_name_addr
from gateway.sip.message import Request, Response, new_branch
from gateway.sip.uri import SipUri

# Requests that refresh the remote target (RFC 3261 12.2; RFC 3311 for UPDATE).
TARGET_REFRESH = frozenset({"INVITE", "UPDATE"})


class DialogState(enum.Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


@dataclass(frozen=True, slots=True)
class DialogId:
    call_id: str
    local_tag: str
    remote_tag: str


@dataclass(slots=True)
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    # From and To of our requests, as the dialog's first messages wrote them; their tags are
    # made local_tag and remote_tag when a request is built.
    local: NameAddr
    remote: NameAddr
    remote_target: str  # the URI of the peer's Contact
    route_set: tuple[str, ...]  # Route values for our requests, in order
    local_cseq: int
    remote_cseq: int | None
    secure: bool
    state: DialogState
    is_uac: bool
    # The INVITE's CSeq, which an ACK for its 2xx repeats.
    invite_cseq: int = field(default=0)
    # From and To of our requests, written once: both tags are fixed for the dialog's life.
    _from_line: str = field(default="", init=False, repr=False, compare=False)
    _to_line: str = field(default="", init=False, repr=False, compare=False)

    @property
    def id(self) -> DialogId:
        return DialogId(self.call_id, self.local_tag, self.remote_tag)

    # -- creation ------------------------------------------------------------------------
    @classmethod
    def from_response(cls, request: Request, response: Response) -> Dialog:
        """The UAC's dialog, from a 101-199 with a To tag or a 2xx (RFC 3261 12.1.2)."""
        if response.to.tag is None or not 100 < response.status < 300:
            raise ValueError("only a 1xx with a To tag or a 2xx creates a dialog")
        contact = _contact_uri(response)
        return cls(
            call_id=request.call_id,
            local_tag=request.from_.tag or "",
            remote_tag=response.to.tag,
            local=request.from_,
            remote=response.to,
            remote_target=contact or request.uri_text,
            route_set=tuple(reversed(response.headers.get_all("Record-Route"))),
            local_cseq=request.cseq.seq,
            remote_cseq=None,
            secure=_is_sips(request.uri_text) and response.status < 300,
            state=DialogState.CONFIRMED if response.status >= 200 else DialogState.EARLY,
            is_uac=True,
            invite_cseq=request.cseq.seq if request.method == "INVITE" else 0,
        )

    @classmethod
    def from_request(cls, request: Request, local_tag: str, *, confirmed: bool) -> Dialog:
        """The UAS's dialog, for the request it answers with a tagged 1xx or a 2xx
        (RFC 3261 12.1.1)."""
        contact = _contact_uri(request)
        if contact is None:
            raise SipRequestError(400, "Bad Request (Contact required to set up a dialog)")
        route_set = tuple(request.headers.get_all("Record-Route"))
        if route_set:
            # Read now, so that a route set our requests could not follow refuses the
            # request that would set up the dialog (400), not the dialog's first BYE.
            parse_name_addr(route_set[0], "Record-Route")
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=request.from_.tag or "",
            local=request.to,
            remote=request.from_,
            remote_target=contact,
            route_set=route_set,
            local_cseq=0,
            remote_cseq=request.cseq.seq,
            secure=_is_sips(request.uri_text),
            state=DialogState.CONFIRMED if confirmed else DialogState.EARLY,
            is_uac=False,
        )

    # -- updates -------------------------------------------------------------------------
    def on_response(self, request: Request, response: Response) -> None:
        """A response to a request of ours in this dialog (or to the INVITE that made it)."""
        if response.status >= 300:
            if request.method == "INVITE" and self.state is DialogState.EARLY:
                self.state = DialogState.TERMINATED
            elif response.status in (404, 410, 416, 480, 481, 482, 483, 484, 485, 502, 604):
                # RFC 5057: these end the dialog usage; for an INVITE dialog, the dialog.
                self.state = DialogState.TERMINATED
            return
        if response.status < 200 and self.state is not DialogState.EARLY:
            return
        contact = _contact_uri(response)
        if contact is not None and (request.method in TARGET_REFRESH
                                    or self.state is DialogState.EARLY):
            self.remote_target = contact
        if self.state is DialogState.EARLY and response.status >= 200:
            # The 2xx that confirms the dialog sets its route set for good (RFC 3261 13.2.2.4).
            self.route_set = tuple(reversed(response.headers.get_all("Record-Route")))
            self.state = DialogState.CONFIRMED

    def on_request(self, request: Request) -> None:
        """A request from the peer inside this dialog: CSeq order and target refresh
        (RFC 3261 12.2.2). Raises `SipRequestError(500)` for an out-of-order CSeq."""
        seq = request.cseq.seq
        if request.method not in ("ACK", "CANCEL"):
            if self.remote_cseq is not None and seq < self.remote_cseq:
                raise SipRequestError(500, "Server Internal Error (CSeq out of order)")
            self.remote_cseq = seq
        contact = _contact_uri(request)
        if contact is not None and request.method in TARGET_REFRESH:
            self.remote_target = contact
        if request.method == "BYE":
            self.state = DialogState.TERMINATED

    def matches(self, message: Request | Response) -> bool:
        """Whether `message` belongs here: Call-ID and both tags (RFC 3261 12.2.2)."""
        if message.call_id != self.call_id:
            return False
        if isinstance(message, Request):
            return (message.to.tag == self.local_tag
                    and message.from_.tag == self.remote_tag)
        return message.from_.tag == self.local_tag and message.to.tag == self.remote_tag

    # -- requests ------------------------------------------------------------------------
    def create_request(
        self,
        method: str,
        via: str,
        *,
        headers: tuple[tuple[str, str], ...] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Request:
        """A request inside the dialog (RFC 3261 12.2.1.1). `via` is the sent-by part,
        e.g. `SIP/2.0/TLS gw.example.com:5061`; the branch is new for all but ACK, which
        the caller builds with `ack`."""
        if method == "ACK":
            raise ValueError("use ack() for the ACK of a 2xx")
        if method != "CANCEL":
            self.local_cseq += 1
        if method == "INVITE":
            self.invite_cseq = self.local_cseq
        return self._build(method, self.local_cseq, via, new_branch(), headers, body,
                           content_type)

    def ack(self, via: str, *, body: bytes = b"", content_type: str | None = None) -> Request:
        """The ACK for a 2xx to our INVITE: the INVITE's CSeq number, a new branch."""
        return self._build("ACK", self.invite_cseq, via, new_branch(), (), body, content_type)

    def _build(
        self,
        method: str,
        cseq: int,
        via: str,
        branch: str,
        headers: tuple[tuple[str, str], ...],
        body: bytes,
        content_type: str | None,
    ) -> Request:
        uri, routes = self._request_uri_and_routes()
        request = Request(method, uri)
        h = request.headers
        h.add("Via", f"{via};branch={branch};rport")
        h.add("Max-Forwards", "70")
        for route in routes:
            h.add("Route", route)
        if not self._from_line:
            self._from_line = _tagged(self.local, self.local_tag)
            self._to_line = _tagged(self.remote, self.remote_tag)
        h.add("From", self._from_line)
        h.add("To", self._to_line)
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{cseq} {method}")
        for name, value in headers:
            h.add(name, value)
        request.set_body(body, content_type)
        return request

    def _request_uri_and_routes(self) -> tuple[str, tuple[str, ...]]:
        if not self.route_set:
            return self.remote_target, ()
        first = parse_name_addr(self.route_set[0], "Route").uri
        if isinstance(first, SipUri) and first.has_param("lr"):
            return self.remote_target, self.route_set
        # Strict router: it takes the Request-URI; the remote target goes last as a Route.
        uri = first.without_headers() if isinstance(first, SipUri) else first
        return str(uri), (*self.route_set[1:], f"<{self.remote_target}>")

    @property
    def next_hop(self) -> str:
        """The URI the request goes to first: the top route, else the remote target."""
        if self.route_set:
            return str(parse_name_addr(self.route_set[0], "Route").uri)
        return self.remote_target


def _tagged(addr: NameAddr, tag: str) -> str:
    """`addr` with `tag` as its tag: as written when it has that tag already (the usual case,
    byte for byte what the peer sent), else rewritten."""
    return str(addr) if addr.tag == tag else str(addr.with_tag(tag))


def _contact_uri(message: Request | Response) -> str | None:
    contacts = message.contacts
    return str(contacts[0].uri) if contacts else None


def _is_sips(uri: str) -> bool:
    return uri[:5].lower() == "sips:"
