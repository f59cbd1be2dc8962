"""The back-to-back user agent.

An INVITE the routing engine routes (a rule's destination, or a service's `target`) gets an
outbound leg: the target is a registered device's binding, the rule's `call_via` server, or
the destination resolved by RFC 3263; an INVITE of our own goes to the first address, and the
far end's answers are mapped back: provisionals relayed (and a local 180 if the far end says
nothing for 2 s, so Lync does not give up), the final response relayed, a 503 or a timeout
moving on to the next address. CANCEL and BYE from either side end both legs; refreshes
(re-INVITE/UPDATE) are answered on the leg they arrive on, and a change of session (hold,
new codecs, a new address) is carried to the other leg as a re-INVITE/UPDATE of our own.
Each leg has its own session timer (RFC 4028): the gateway refreshes the legs it is the
refresher of and hangs up both legs when a leg stops refreshing or answering refreshes.

Media is anchored at the node: SIP to SIP through the relay with both SDPs rewritten; a Lync
caller's ICE is terminated here (`lync_media`); toward a Lync callee the gateway offers ICE
itself (`lync_callee`). Toward or from a Lync leg whose ICE the gateway terminates, only a
change of direction (hold, resume) crosses; other session changes are answered here. Not
here yet: Conference ID joins.

Each call is a small object driven by events and by deadlines on the B2BUA's heap (session
timers, the local 180); the asyncio adapter supplies `Hooks` for what a sans-I/O core
cannot do, waiting for DNS and for ICE gathering toward Lync, which a call to a numeric
address or a registered device with SIP media only does without.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from gateway import logs
from gateway.calls.admission import Admission, reason_phrase
from gateway.calls.cdr import CallRecord, CdrStore
from gateway.calls.lync_callee import LyncCallee
from gateway.calls.lync_media import LyncMedia, wants_ice
from gateway.calls.registrar import Registrar, aor_of
from gateway.media.backend import SipBridge
from gateway.media.call import CallMedia
from gateway.resolver.rfc3263 import ResolveError, Resolver, Target
from gateway.sip.dialog import Dialog
from gateway.sip.errors import SipParseError, SipRequestError
from gateway.sip.message import Request, Response, make_response, new_branch, new_call_id
from gateway.sip.session_timer import (
    LegTimer,
    TimerPolicy,
    UasTimer,
    answer_as_uas,
    retry_interval,
    uac_headers,
    uac_result,
)
from gateway.sip.transaction_layer import (
    AckReceived,
    CancelReceived,
    Event,
    RequestReceived,
    ResponseReceived,
    TransactionLayer,
    TransactionTimeout,
)
from gateway.sip.transaction_machines import ClientTransaction, ServerTransaction, State
from gateway.sip.uri import SipUri, parse_uri
from gateway.transport.peer import Peer
from ice.errors import IceError, PortsExhausted
from ice.ports import PortAllocator
from ice.session import TurnSettings
from routing.engine import Decision, Router
from sdp.anchor import anchored, remote_addresses
from sdp.errors import SdpError
from sdp.hold import Directions, directions, restated
from sdp.model import SessionDescription
from sdp.multipart import pick_sdp, split
from sdp.offer_answer import Encryption, rule_cap
from sdp.parse import parse_sdp

if TYPE_CHECKING:
    from gateway.sip.endpoint import Endpoint

log = logs.get(__name__)
LOCAL_RINGING_AFTER = 2.0  # Lync cancels a call that sees only 100 Trying for ~10 s
RINGING = "ringing"  # the deadline entry of a call's local 180, beside its legs' timers
ICE_TIMEOUT = 15.0  # from our answer to a selected pair toward Lync
# Headers that describe the caller and are carried to the other leg. Session-Expires and
# Min-SE are not: each leg negotiates its own session timer with the gateway.
CARRIED = ("Allow", "User-Agent", "Ms-Conversation-ID", "P-Asserted-Identity", "Accept")
# Option tags of the caller's that the gateway cannot honour on the other leg: it relays
# provisionals unreliably, so a callee told 100rel would wait for PRACKs that never come.
NOT_CARRIED_OPTIONS = frozenset({"100rel"})
# Failures of a request inside a dialog that end the dialog (RFC 3261 14.1, RFC 5057).
DIALOG_GONE = frozenset({408, 481})


@dataclass
class Hooks:
    """What the asyncio adapter provides: run a coroutine; feed its outcome back to the core
    (`emit(make)` calls `make(now)` and sends what it returns)."""

    spawn: Callable[[Coroutine[object, object, None]], None]
    emit: Callable[[Callable[[float], list[Event]]], None]


@dataclass(frozen=True, slots=True)
class CallLimits:
    """Overload protection (0 = no limit): beyond either, 503 + Retry-After."""

    max_calls: int = 0
    max_calls_per_second: int = 0
    retry_after: int = 30


@dataclass(frozen=True, slots=True)
class NextHop:
    """A named SIP proxy or Lync server a rule sends its calls through (`call_via`)."""

    address: str
    port: int
    transport: str  # udp | tcp | tls


@dataclass(frozen=True, slots=True)
class Local:
    """How this node appears in the SIP it writes."""

    address: str  # Via / Contact host
    ports: dict[str, int]  # transport -> listening port
    fqdn: str = ""  # the SIP TLS FQDN: the host of our Contact over TLS (Lync checks it)

    def is_self(self, target: Target) -> bool:
        """Whether `target` is one of this node's own listeners."""
        if self.ports.get(target.transport) != target.port:
            return False
        loopback = ("127.0.0.1", "::1")
        return target.address == self.address or (
            target.address in loopback and self.address in (*loopback, "0.0.0.0", "::"))

    def via(self, transport: str) -> str:
        return f"SIP/2.0/{transport} {self.address}:{self.ports.get(transport, 5060)}"

    def contact(self, transport: str) -> str:
        suffix = "" if transport == "UDP" else f";transport={transport.lower()}"
        host = self.fqdn if transport == "TLS" and self.fqdn else self.address
        return f"<sip:{host}:{self.ports.get(transport, 5060)}{suffix}>"


class CallState(enum.Enum):
    RESOLVING = "resolving"
    CALLING = "calling"
    EARLY = "early"
    CONNECTED = "connected"
    ENDED = "ended"


@dataclass(eq=False)
class Call:
    id: int
    inbound: Request
    in_txn: ServerTransaction
    in_tag: str
    decision: Decision
    target_uri: str
    state: CallState = CallState.RESOLVING
    targets: list[Target] = field(default_factory=list)
    out_invite: Request | None = None
    out_txn: ClientTransaction | None = None
    in_dialog: Dialog | None = None
    out_dialog: Dialog | None = None
    provisional_sent: bool = False
    cancelled: bool = False
    callee_heard: bool = False  # a provisional came back: a CANCEL may be sent (RFC 3261 9.1)
    cancel_sent: bool = False
    out_peer: Peer | None = None
    record: CallRecord | None = None
    offer: SessionDescription | None = None  # the caller's SDP, when media is anchored
    bridge: SipBridge | None = None
    toward_caller: list[int] = field(default_factory=list)  # relay ports in our answer
    toward_callee: list[int] = field(default_factory=list)  # relay ports in our offer
    sdp_to_caller: bytes = b""  # the session description each leg last got from us
    sdp_to_callee: bytes = b""
    lync: LyncMedia | None = None  # the caller speaks ICE: the gateway terminates it
    lync_callee: LyncCallee | None = None  # the callee is Lync: we offer ICE to it
    sip_offer: bytes = b""  # the offer the callee gets when media is terminated here
    sdp_from_caller: bytes = b""  # the session description each leg last sent us
    sdp_from_callee: bytes = b""
    in_session: UasTimer | None = None  # the caller's leg timer as our 2xx will state it
    out_interval: int = 0  # the Session-Expires our INVITE asks the callee for
    timers: dict[str, LegTimer] = field(default_factory=dict)  # "in" / "out" -> its timer
    relaying: InDialog | None = None  # a session change in flight to the other leg
    # "in" / "out" -> the directions that leg last offered, where its Lync side ends here.
    offered_directions: dict[str, Directions] = field(default_factory=dict)
    single_part: bytes = b""  # the callee refused multipart: the SDP part it gets instead
    out_answer: Response | None = None  # the callee's 2xx (its Allow says if UPDATE works)

    @property
    def media(self) -> CallMedia | None:
        """The relayed media of the call, however it is anchored."""
        for side in (self.bridge, self.lync, self.lync_callee):
            if side is not None and side.media is not None:
                return side.media
        return None

    @property
    def answered(self) -> bool:
        return self.in_txn.last_response is not None and (
            self.in_txn.last_response.status >= 200)


class B2bua(Admission):
    """The CallHandler for INVITE, BYE and UPDATE (and REGISTER with a registrar): admission
    (the routing decision), then the outbound leg and the call's media."""

    methods: frozenset[str] = frozenset({"INVITE", "BYE", "UPDATE"})

    def __init__(self, *, router: Callable[[], Router], location: Callable[[], str],
                 hooks: Hooks, local: Local, resolver: Resolver,
                 limits: Callable[[], CallLimits] = CallLimits, cdrs: CdrStore | None = None,
                 wall_clock: Callable[[], float] = time.time,
                 media_ports: PortAllocator | None = None,
                 media_timeout: Callable[[], float] = lambda: 60.0,
                 next_hops: Callable[[], dict[str, NextHop]] = dict,
                 registrar: Registrar | None = None,
                 static_nat: Callable[[], str] = str,
                 encryption: Callable[[], Encryption] = lambda: "best_effort",
                 turn_for: Callable[[str, str], TurnSettings | None] = lambda _, __: None,
                 stun_for: Callable[[str, str], tuple[str, int] | None] = lambda _, __: None,
                 mssip_domain: Callable[[str], str] = lambda _: "",
                 session_timers: Callable[[], TimerPolicy] = TimerPolicy,
                 anchor_sip_media: Callable[[], bool] = lambda: True) -> None:
        super().__init__(router=router, location=location)
        self.hooks = hooks
        self.local = local
        self.resolver = resolver
        self.limits = limits
        self.cdrs = cdrs
        self.wall_clock = wall_clock
        self.media_ports = media_ports  # None: SDP passes end to end, media is not anchored
        self.media_timeout = media_timeout
        self.next_hops = next_hops
        self.registrar = registrar
        self.static_nat = static_nat
        self.encryption = encryption
        self.turn_for = turn_for
        self.stun_for = stun_for
        self.mssip_domain = mssip_domain
        self.session_timers = session_timers
        self.anchor_sip_media = anchor_sip_media
        # Leg timers (and each call's local 180) by deadline, naming calls by id. An entry
        # whose timer has moved on, whose call ended or was heard ringing is stale and
        # skipped, so a refresh never has to find and remove the old entry; the heap is
        # compacted when stale entries dominate it.
        self._deadlines: list[tuple[float, int, int, str]] = []
        self._seq = itertools.count()
        self.ice_outcomes: dict[str, int] = {}
        if registrar is not None:
            self.methods = self.methods | {"REGISTER"}
        self._recent: deque[float] = deque()  # admission times in the last second
        # For metrics: ended calls by (outcome, decision), and media totals of ended calls.
        self.outcomes: dict[tuple[str, str], int] = {}
        self.media_totals: dict[str, int] = {"packets": 0, "bytes": 0, "lost": 0,
                                             "dropped": 0}
        self.calls: dict[int, Call] = {}
        self._ids = itertools.count(1)
        self._by_dialog: dict[tuple[str, str], Call] = {}  # (Call-ID, our tag) -> call

    # -- events from the core -------------------------------------------------------------
    def on_event(self, event: Event, now: float, core: Endpoint) -> list[Event]:
        if isinstance(event, RequestReceived):
            request = event.request
            if request.method == "INVITE" and request.to.tag is None:
                return self._new_invite(event, now, core)
            if request.method == "BYE":
                return self._bye(event, now, core)
            if request.method in ("INVITE", "UPDATE") and request.to.tag is not None:
                return self._in_dialog(event, now, core)
            if request.method == "UPDATE":  # RFC 3311: only inside a (possibly early) dialog
                return core.respond(request, event.transaction,
                                    make_response(request, 481, to_tag=core.new_tag()), now)
            if request.method == "REGISTER" and self.registrar is not None:
                return self.registrar.register(request, event.transaction,
                                               event.transaction.peer, now, core)
            return super().on_event(event, now, core)  # Admission: 481 out of dialog
        if isinstance(event, (ResponseReceived, TransactionTimeout)) and isinstance(
                event.transaction.tu_data, InDialog):
            response = event.response if isinstance(event, ResponseReceived) else None
            return self._in_dialog_answered(event.transaction.tu_data, response, now, core)
        if isinstance(event, ResponseReceived):
            call = event.transaction.tu_data
            if isinstance(call, Call) and event.transaction is call.out_txn:
                return self._response(call, event.response, now, core)
            return []
        if isinstance(event, TransactionTimeout):
            call = event.transaction.tu_data
            if isinstance(call, Call) and event.transaction is call.out_txn:
                why = "unreachable" if event.timer == "transport" else "timeout"
                return self._next_target(call, now, core, why)
            return []
        if isinstance(event, CancelReceived):
            return self._cancel(event, now, core)
        if isinstance(event, AckReceived):
            return []  # the ACK for our 2xx: the outbound leg was ACKed when it answered
        return []

    def _new_invite(self, event: RequestReceived, now: float, core: Endpoint) -> list[Event]:
        overload = self._overloaded(now)
        if overload is not None:
            log.warning("call_refused", call_id=event.request.call_id, reason=overload)
            return core.respond(event.request, event.transaction, make_response(
                event.request, 503, reason_phrase("Service Unavailable", overload),
                to_tag=core.new_tag(),
                headers=(("Retry-After", str(self.limits().retry_after)),)), now)
        try:
            in_session = answer_as_uas(event.request, self.session_timers())
        except SipRequestError as exc:  # 422: the caller's interval is below our Min-SE
            return core.respond(event.request, event.transaction, make_response(
                event.request, exc.status_hint, exc.reason, to_tag=core.new_tag(),
                headers=exc.headers), now)
        decision = self.decide(event.request)
        record = self._record(event.request, decision)
        if not decision.routed:
            record.ended, record.end_cause = record.started, f"404 {decision.reason}"
            self._tally("rejected", "reject")
            self._write(record)
            return self.answer_decision(event, decision, now, core)
        target = self._target_uri(decision)
        if target is None:
            why = (f"{decision.reason}; {decision.destination} is not a SIP address and the "
                   "rule names no server")
            record.ended, record.end_cause = record.started, f"404 {why}"
            self._tally("failed", decision.outcome)
            self._write(record)
            return core.respond(event.request, event.transaction, make_response(
                event.request, 404, reason_phrase("Not Found", why), to_tag=core.new_tag()),
                now)
        offer = None
        lync_offer = None
        if self.media_ports is not None and (
                self.anchor_sip_media() or _media_for_lync(event.request, decision)):
            try:
                lync_offer, offer = _offers(event.request)
            except SdpError as exc:
                record.ended, record.end_cause = record.started, f"488 {exc}"
                self._write(record)
                return core.respond(event.request, event.transaction, make_response(
                    event.request, 488, reason_phrase("Not Acceptable Here", str(exc)),
                    to_tag=core.new_tag()), now)
        call = Call(next(self._ids), event.request, event.transaction, core.new_tag(),
                    decision, target, record=record, offer=offer, in_session=in_session,
                    out_interval=self.session_timers().interval)
        if event.request.content_type is not None and (
                event.request.content_type.type == "application/sdp"):
            call.sdp_from_caller = event.request.body
        rule = decision.rule
        if (offer is not None and self.media_ports is not None and rule is not None
                and rule.outgoing_protocol == "mssip"):
            call.offer = None  # not anchored as SIP-to-SIP: Lync gets an ICE offer of ours
            call.lync_callee = LyncCallee(
                offer, self.media_ports, self.local.address, self.static_nat(),
                self.encryption(), lambda reason: self.hooks.emit(
                    lambda now: self._hang_up(call, reason, now, core)),
                turn=self.turn_for(rule.turn_server, decision.outgoing_location),
                stun=self.stun_for(rule.stun_server, decision.outgoing_location),
                bandwidth_kbps=rule_cap(rule))
        elif not self.anchor_sip_media():
            call.offer = None  # signalling only: SIP endpoints send their media to each other
        if lync_offer is not None and self.media_ports is not None:
            call.lync = LyncMedia(
                lync_offer, self.media_ports, self.local.address, self.static_nat(),
                self.encryption(), lambda reason: self.hooks.emit(
                    lambda now: self._hang_up(call, reason, now, core)),
                turn=self.turn_for(decision.rule.turn_server if decision.rule else "",
                                   decision.outgoing_location),
                stun=self.stun_for(decision.rule.stun_server if decision.rule else "",
                                   decision.outgoing_location),
                bandwidth_kbps=rule_cap(decision.rule))
        self.calls[call.id] = call
        self._write(record, "open")
        event.transaction.tu_data = call
        self._push(now + LOCAL_RINGING_AFTER, call, RINGING)
        return self._set_up(call, now, core)

    def caller_registered(self, request: Request) -> bool:
        aor = aor_of(request.from_.uri)
        return bool(self.registrar and aor and self.registrar.bindings(aor))

    def _overloaded(self, now: float) -> str | None:
        limits = self.limits()
        if limits.max_calls and len(self.calls) >= limits.max_calls:
            return f"call limit reached: {limits.max_calls} calls in progress"
        if limits.max_calls_per_second:
            while self._recent and now - self._recent[0] >= 1.0:
                self._recent.popleft()
            if len(self._recent) >= limits.max_calls_per_second:
                return f"call rate limit reached: {limits.max_calls_per_second} calls/s"
            self._recent.append(now)
        return None

    def _record(self, request: Request, decision: Decision) -> CallRecord:
        return CallRecord(
            in_call_id=request.call_id, caller=str(request.from_.uri), alias=request.uri_text,
            outcome=decision.outcome, started=self.wall_clock(),
            service=decision.service.name if decision.service else None,
            rule=decision.rule.name if decision.rule else None,
            destination=decision.destination,
        )

    def _write(self, record: CallRecord,
               step: Literal["open", "update", "write"] = "write") -> None:
        """`step`: "open" (admitted), "update" (answered) or "write" (ended)."""
        if self.cdrs is None:
            return
        try:
            getattr(self.cdrs, step)(record)
        except Exception as exc:  # a full disk must not take calls down with it
            log.error("cdr_write_failed", call_id=record.in_call_id, step=step, error=str(exc))

    def _target_uri(self, decision: Decision) -> str | None:
        if decision.service is not None:
            return decision.service.target or None
        destination = decision.destination or ""
        uri = destination if ":" in destination.split("@", 1)[0] else f"sip:{destination}"
        try:
            parsed = parse_uri(uri)
        except SipParseError:
            return None
        if not isinstance(parsed, SipUri) or ("@" not in uri and "." not in parsed.host):
            return None
        return uri

    def _set_up(self, call: Call, now: float, core: Endpoint) -> list[Event]:
        """Find the outbound leg's targets and media, then place it: at once when nothing
        has to be waited for (a registered device or a numeric address, and no ICE toward
        Lync to gather: relay ports are taken at once), else from a task. Whatever goes
        wrong in here, the caller gets a final answer: a call nobody answers holds its
        transaction, and Lync its user, for 32 s."""
        try:
            uri, targets = self._targets_now(call)
            if targets is None or self._ice_to_prepare(call):
                self.hooks.spawn(self._prepare(call, core, uri, targets))
                return []
            self._reserve_relay(call, core)
            return self._place_on(call, targets, now, core)
        except SipRequestError as exc:
            return self._fail(call, exc.status_hint, exc.reason, now, core)
        except Exception as exc:
            return self._fail(call, 500, _crashed(call, exc), now, core)

    def _targets_now(self, call: Call) -> tuple[SipUri, list[Target] | None]:
        """Where the outbound leg goes (the URI to resolve) and, when no DNS is needed,
        its targets already."""
        uri = parse_uri(call.target_uri)
        assert isinstance(uri, SipUri)
        rule = call.decision.rule
        if rule is not None and rule.target in ("registered_or_external", "registered_only"):
            aor = aor_of(uri)
            bindings = self.registrar.bindings(aor) if self.registrar and aor else []
            if bindings:
                # A registered device: its newest binding, where its REGISTER came from.
                call.target_uri = bindings[0].contact
                return uri, [Target(b.peer.transport, b.host, b.host, b.port) for b in bindings]
            if rule.target == "registered_only":
                raise SipRequestError(480, f"{aor or call.target_uri} is not registered")
        hop = self.next_hops().get(rule.call_via) if rule is not None else None
        if hop is not None:
            # The Request-URI stays the destination; the request goes to the named server
            # (an outbound proxy), found the way a SIP URI naming it would be.
            host = f"[{hop.address}]" if ":" in hop.address else hop.address
            hop_uri = parse_uri(f"sip:{host}:{hop.port};transport={hop.transport}")
            assert isinstance(hop_uri, SipUri)
            uri = hop_uri
        try:
            return uri, self.resolver.resolve_now(uri)
        except ResolveError as exc:
            raise SipRequestError(404, str(exc)) from exc

    @staticmethod
    def _ice_to_prepare(call: Call) -> bool:
        """Whether the outbound offer waits for ICE toward Lync (candidates to gather)."""
        return call.lync is not None or call.lync_callee is not None

    async def _prepare(self, call: Call, core: Endpoint, uri: SipUri,
                       targets: list[Target] | None) -> None:
        try:
            if targets is None:
                targets = await self.resolver.resolve(uri)
            await self._prepare_ice(call)
            self._reserve_relay(call, core)
        except SipRequestError as exc:
            status, reason = exc.status_hint, exc.reason
            self.hooks.emit(lambda now: self._fail(call, status, reason, now, core))
            return
        except ResolveError as exc:
            why = str(exc)
            self.hooks.emit(lambda now: self._fail(call, 404, why, now, core))
            return
        except Exception as exc:
            why = _crashed(call, exc)
            self.hooks.emit(lambda now: self._fail(call, 500, why, now, core))
            return
        found = targets
        self.hooks.emit(lambda now: self._place_on(call, found, now, core))

    @staticmethod
    async def _prepare_ice(call: Call) -> None:
        try:
            if call.lync is not None:
                call.sip_offer = await call.lync.prepare()
            elif call.lync_callee is not None:
                call.sip_offer = await call.lync_callee.offer()
        except (IceError, PortsExhausted) as exc:
            raise SipRequestError(503, f"media toward Lync: {exc}") from exc

    def _reserve_relay(self, call: Call, core: Endpoint) -> None:
        """The relay's ports for anchored SIP media, taken at once; none for a call that
        ended while its target was looked up, since nothing would release them."""
        if call.offer is None or self.media_ports is None or call.state is CallState.ENDED:
            return
        # By id, not the call itself: the bridge is the call's, and a callback holding the
        # call would make a cycle only the garbage collector frees.
        call_id = call.id
        call.bridge = SipBridge(self.media_ports, lambda reason: self._media_timed_out(
            call_id, reason, core))
        try:
            call.toward_caller, call.toward_callee = call.bridge.reserve(
                self.local.address, [m.has("rtcp-mux") for m in call.offer.media])
        except PortsExhausted as exc:
            raise SipRequestError(503, str(exc)) from exc

    def _place_on(self, call: Call, targets: list[Target], now: float,
                  core: Endpoint) -> list[Event]:
        call.targets = [t for t in targets if not self.local.is_self(t)]
        if not call.targets:
            # A rule that leaves the alias unchanged sends sip:x@<this node> back here, where
            # it would be routed again until Max-Forwards runs out: refuse it at once.
            return self._fail(call, 482, f"{call.target_uri} routes back to this node", now,
                              core)
        return self._place(call, now, core)

    def _ring_locally(self, call: Call, now: float, core: Endpoint) -> list[Event]:
        if call.answered or call.provisional_sent:
            return []
        call.provisional_sent = True
        self._mark_ringing(call)
        return core.respond(call.inbound, call.in_txn, make_response(
            call.inbound, 180, "Ringing", to_tag=call.in_tag), now)

    # -- the outbound leg ----------------------------------------------------------------
    def _place(self, call: Call, now: float, core: Endpoint) -> list[Event]:
        if call.cancelled or call.answered:
            return []
        if not call.targets:
            return self._fail(call, 404, "no address for " + call.target_uri, now, core)
        target = call.targets[0]
        inbound = call.inbound
        request = Request("INVITE", call.target_uri)
        h = request.headers
        h.add("Via", f"{self.local.via(target.transport)};branch={new_branch()};rport")
        h.add("Max-Forwards", str(max(0, (inbound.max_forwards or 70) - 1)))
        domain = self.mssip_domain(call.decision.outgoing_location)
        if call.lync_callee is not None and domain:
            # Toward Lync the caller appears in the gateway's domain (the guide's Infinity
            # domain, the outgoing location's override first), which the Lync pool trusts
            # for this application.
            user = _user(inbound.from_.uri) or "gateway"
            display = f"{inbound.from_.display} " if inbound.from_.display else ""
            h.add("From", f"{display}<sip:{user}@{domain}>;tag={call.in_tag}")
        else:
            h.add("From", str(inbound.from_.with_tag(call.in_tag)))
        h.add("To", f"<{call.target_uri}>")
        h.add("Call-ID", new_call_id(self.local.address))
        h.add("CSeq", "1 INVITE")
        h.add("Contact", self.local.contact(target.transport))
        for name in CARRIED:
            for value in inbound.headers.get_all(name):
                h.add(name, value)
        options = [t for t in inbound.tokens("supported") if t not in NOT_CARRIED_OPTIONS]
        h.add("Supported", ", ".join(dict.fromkeys([*options, "timer"])))
        if call.out_interval:
            for name, value in uac_headers(call.out_interval, self.session_timers().min_se,
                                           refresher=False):
                h.add(name, value)
        if call.single_part:
            request.set_body(call.single_part, "application/sdp")
        elif call.offer is not None and call.bridge is not None:
            body = anchored(call.offer, self.local.address, call.toward_callee,
                            rule_cap(call.decision.rule)).to_bytes()
            request.set_body(body, "application/sdp")
        elif call.lync is not None or call.lync_callee is not None:
            request.set_body(call.sip_offer, "application/sdp")
        else:
            request.set_body(inbound.body, inbound.headers.get("Content-Type"))
        call.sdp_to_callee = request.body
        peer = Peer(target.transport, target.address, target.port, server_name=target.host)
        txn, events = core.send_request(request, peer, now, tu_data=call)
        call.out_invite, call.out_txn, call.out_peer = request, txn, peer
        call.state = CallState.CALLING
        if call.record is not None:
            call.record.out_call_id = request.call_id
        log.info("call_placed", call_id=inbound.call_id, leg="out",
                 out_call_id=request.call_id, target=f"{target.transport.lower()}:"
                 f"{target.address}:{target.port}", uri=call.target_uri)
        return events

    def _next_target(self, call: Call, now: float, core: Endpoint, why: str) -> list[Event]:
        failed = call.targets.pop(0) if call.targets else None
        log.info("target_failed", call_id=call.inbound.call_id, reason=why,
                 target=None if failed is None else f"{failed.address}:{failed.port}")
        if call.targets and not call.cancelled:
            return self._place(call, now, core)
        status = 408 if why == "timeout" else 503
        return self._fail(call, status, f"every target failed (last: {why})", now, core)

    def _response(self, call: Call, response: Response, now: float,
                  core: Endpoint) -> list[Event]:
        status = response.status
        if status < 200:
            call.callee_heard = True
            if call.cancelled:
                return self._send_cancel(call, now, core)
            if status == 100 or call.answered:
                return []
            call.state = CallState.EARLY
            call.provisional_sent = True
            self._mark_ringing(call)
            relayed = self._mirror(call, response, status)
            return core.respond(call.inbound, call.in_txn, relayed, now)
        if status < 300:
            return self._connected(call, response, now, core)
        if status == 503 and len(call.targets) > 1 and not call.cancelled:
            return self._next_target(call, now, core, "503")
        if not call.cancelled and self._retry(call, response):
            return self._place(call, now, core)
        return self._fail(call, status, response.reason, now, core)

    def _retry(self, call: Call, response: Response) -> bool:
        """Whether the same target should get the INVITE again, changed as the refusal
        asks: 415 for a multipart body (RFC 3261 21.4.13; Lync's two-part offers) gets the
        SDP part alone, 422 a longer session interval (RFC 4028 7.3)."""
        if response.status == 415 and not call.single_part and _boundary(call.inbound):
            try:
                call.single_part = pick_sdp(split(call.inbound.body,
                                                  _boundary(call.inbound))).body
            except SdpError:
                return False  # nothing better to send: the 415 goes to the caller
            log.info("multipart_refused", call_id=call.inbound.call_id)
            return True
        if response.status == 422:
            interval = retry_interval(response, call.out_interval)
            if interval is not None and interval <= 86400:
                call.out_interval = interval
                return True
        return False

    def _connected(self, call: Call, response: Response, now: float,
                   core: Endpoint) -> list[Event]:
        assert call.out_invite is not None and call.out_peer is not None
        known = call.out_dialog
        if known is not None and response.to.tag == known.remote_tag:
            # A retransmitted 2xx: our ACK was lost; send it again (RFC 3261 13.2.2.4).
            ack = known.ack(self.local.via(call.out_peer.transport))
            return TransactionLayer.send_stateless(ack, call.out_peer)
        out_dialog = Dialog.from_response(call.out_invite, response)
        ack = out_dialog.ack(self.local.via(call.out_peer.transport))
        events = TransactionLayer.send_stateless(ack, self._dialog_peer(out_dialog, call))
        if call.cancelled or call.answered:
            # Answered after we gave up on it: hang up the leg we no longer want.
            bye = out_dialog.create_request("BYE", self.local.via(call.out_peer.transport))
            _, sent = core.send_request(bye, self._dialog_peer(out_dialog, call), now)
            return events + sent
        call.out_dialog = out_dialog
        if call.lync_callee is not None:
            try:
                caller_answer = call.lync_callee.answer_caller(response.body)
            except SdpError as exc:
                bye = out_dialog.create_request("BYE", self.local.via(call.out_peer.transport))
                events += core.send_request(bye, call.out_peer, now)[1]
                return events + self._fail(call, exc.status_hint, str(exc), now, core)
            self.hooks.spawn(self._ice_toward_lync(call, call.lync_callee, core))
            ok = self._mirror(call, response, 200)
            ok.set_body(caller_answer, "application/sdp")
        elif call.lync is not None:
            try:
                lync_answer = call.lync.answer_lync(response.body)
            except SdpError as exc:
                bye = out_dialog.create_request("BYE", self.local.via(call.out_peer.transport))
                events += core.send_request(bye, call.out_peer, now)[1]
                return events + self._fail(call, exc.status_hint, str(exc), now, core)
            lync = call.lync
            self.hooks.spawn(self._ice(call, lync, core))
            ok = self._mirror(call, response, 200)
            ok.set_body(lync_answer, "application/sdp")
        else:
            ok = self._mirror(call, response, 200)
        call.sdp_to_caller = ok.body
        call.sdp_from_callee, call.out_answer = response.body, response
        call.in_dialog = Dialog.from_request(call.inbound, call.in_tag, confirmed=True)
        call.state = CallState.CONNECTED
        self._set_timer(call, "in", call.in_session.leg(now) if call.in_session else None)
        self._set_timer(call, "out", uac_result(response, now))
        if call.record is not None:
            call.record.answered = self.wall_clock()
            self._write(call.record, "update")
        self._by_dialog[(call.inbound.call_id, call.in_tag)] = call
        self._by_dialog[(out_dialog.call_id, out_dialog.local_tag)] = call
        log.info("call_connected", call_id=call.inbound.call_id, leg="both",
                 out_call_id=out_dialog.call_id)
        return events + core.respond(call.inbound, call.in_txn, ok, now)

    def _mirror(self, call: Call, response: Response, status: int) -> Response:
        """The far end's answer, as our answer on the inbound leg."""
        headers = [("Contact", self.local.contact(call.in_txn.peer.transport))]
        headers += [(n, v) for n in ("Supported", "Allow") for v in response.headers.get_all(n)]
        if 200 <= status < 300 and call.in_session is not None:
            headers += call.in_session.headers  # the caller's leg timer is ours to state
        body = self._answer_body(call, response)
        return make_response(call.inbound, status, response.reason, to_tag=call.in_tag,
                             headers=headers, body=body,
                             content_type=response.headers.get("Content-Type")
                             if body else None)

    async def _ice(self, call: Call, lync: LyncMedia, core: Endpoint) -> None:
        try:
            await lync.connect(ICE_TIMEOUT, self.media_timeout())
        except IceError as exc:
            why = f"ICE toward Lync failed: {exc}"
            log.warning("ice_failed", call_id=call.inbound.call_id, reason=str(exc))
            self.ice_outcomes["failed"] = self.ice_outcomes.get("failed", 0) + 1
            self.hooks.emit(lambda now: self._hang_up(call, why, now, core))
            return
        self.ice_outcomes["connected"] = self.ice_outcomes.get("connected", 0) + 1

    async def _ice_toward_lync(self, call: Call, callee: LyncCallee, core: Endpoint) -> None:
        try:
            await callee.connect(ICE_TIMEOUT, self.media_timeout())
        except IceError as exc:
            why = f"ICE toward Lync failed: {exc}"
            log.warning("ice_failed", call_id=call.inbound.call_id, reason=str(exc))
            self.ice_outcomes["failed"] = self.ice_outcomes.get("failed", 0) + 1
            self.hooks.emit(lambda now: self._hang_up(call, why, now, core))
            return
        self.ice_outcomes["connected"] = self.ice_outcomes.get("connected", 0) + 1
        self.hooks.emit(lambda now: self._send_updated_offer(call, callee, now, core))

    def _send_updated_offer(self, call: Call, callee: LyncCallee, now: float,
                            core: Endpoint) -> list[Event]:
        """The second INVITE toward Lync with a=remote-candidates (RFC 5245 9.1.2.2)."""
        if call.state is not CallState.CONNECTED or call.out_dialog is None or (
                call.out_peer is None):
            return []
        offer = callee.updated_offer()
        reinvite = call.out_dialog.create_request(
            "INVITE", self.local.via(call.out_peer.transport),
            headers=(("Contact", self.local.contact(call.out_peer.transport)),),
            body=offer, content_type="application/sdp")
        call.sdp_to_callee = offer
        return core.send_request(reinvite, call.out_peer, now,
                                 tu_data=InDialog(call, "out", "remote-candidates"))[1]

    def _answer_body(self, call: Call, response: Response) -> bytes:
        """The callee's SDP answer, pointed at the relay (which starts relaying on it)."""
        if call.lync is not None:
            return b""  # Lync gets our own answer with the 2xx, never the SIP side's SDP
        if not response.body or call.bridge is None or call.offer is None:
            return response.body
        try:
            answer = parse_sdp(response.body)
        except SdpError as exc:
            log.warning("answer_sdp_unreadable", call_id=call.inbound.call_id, error=str(exc))
            return response.body
        if len(answer.media) != len(call.offer.media):
            log.warning("answer_sdp_mismatch", call_id=call.inbound.call_id,
                        offered=len(call.offer.media), answered=len(answer.media))
            return response.body
        if call.bridge.media is None:
            call.bridge.connect([m.media for m in call.offer.media],
                                remote_addresses(call.offer), remote_addresses(answer),
                                self.media_timeout())
        return anchored(answer, self.local.address, call.toward_caller,
                        rule_cap(call.decision.rule)).to_bytes()

    def _fail(self, call: Call, status: int, reason: str, now: float,
              core: Endpoint) -> list[Event]:
        self._end(call, f"{status} {reason}", "callee" if status in (
            480, 486, 600, 603) else "gateway")
        if call.answered:
            return []
        response = make_response(call.inbound, status, reason_phrase(
            _REASONS.get(status, "Failed"), reason) if status in _REASONS else reason,
            to_tag=call.in_tag,
            headers=(("Retry-After", "30"),) if status == 503 else ())
        return core.respond(call.inbound, call.in_txn, response, now)

    # -- CANCEL and BYE ------------------------------------------------------------------
    def _cancel(self, event: CancelReceived, now: float, core: Endpoint) -> list[Event]:
        call = event.invite.tu_data
        if not isinstance(call, Call) or call.answered:
            return []
        call.cancelled = True
        # Before any provisional the CANCEL waits for one (RFC 3261 9.1): a callee that
        # never answers is left to Timer B, and one that answers 2xx gets ACK and BYE.
        events = self._send_cancel(call, now, core) if call.callee_heard else []
        self._end(call, "cancelled by the caller", "caller")
        return events + core.respond(call.inbound, call.in_txn, make_response(
            call.inbound, 487, to_tag=call.in_tag), now)

    def _send_cancel(self, call: Call, now: float, core: Endpoint) -> list[Event]:
        if call.cancel_sent or call.out_invite is None or call.out_peer is None:
            return []
        call.cancel_sent = True
        return core.send_request(_cancel_for(call.out_invite), call.out_peer, now)[1]

    def _bye(self, event: RequestReceived, now: float, core: Endpoint) -> list[Event]:
        request = event.request
        call = self._by_dialog.pop((request.call_id, request.to.tag or ""), None)
        if call is None or call.in_dialog is None or call.out_dialog is None:
            return core.respond(request, event.transaction, make_response(request, 481), now)
        from_inbound = request.call_id == call.in_dialog.call_id
        this, other = (call.in_dialog, call.out_dialog) if from_inbound else (
            call.out_dialog, call.in_dialog)
        this.on_request(request)
        events = core.respond(request, event.transaction, make_response(request, 200), now)
        transport = call.in_txn.peer.transport if not from_inbound else (
            call.out_peer.transport if call.out_peer else "UDP")
        bye = other.create_request("BYE", self.local.via(transport))
        peer = (call.in_txn.peer if not from_inbound else self._dialog_peer(other, call))
        _, sent = core.send_request(bye, peer, now)
        self._by_dialog.pop((other.call_id, other.local_tag), None)
        who = "caller" if from_inbound else "callee"
        self._end(call, f"BYE from the {who}", who)
        return events + sent + self._abandon_relay(call, now, core)

    # -- inside a call: refreshes, session changes, session timers -----------------------
    def _in_dialog(self, event: RequestReceived, now: float, core: Endpoint) -> list[Event]:
        """A re-INVITE or UPDATE inside a call. A session refresh (no offer, or the offer
        that leg already made: same o= version, RFC 3264 8) is answered here with what that
        leg already has from us, which keeps the call up through Lync's 30-minute refreshes.
        A change (hold, codecs, a new address) goes on to the other leg."""
        request = event.request
        call = self._by_dialog.get((request.call_id, request.to.tag or ""))
        if call is None or call.in_dialog is None or call.out_dialog is None:
            return core.respond(request, event.transaction, make_response(request, 481), now)
        from_caller = request.call_id == call.in_dialog.call_id
        dialog = call.in_dialog if from_caller else call.out_dialog
        try:
            dialog.on_request(request)
            if call.relaying is not None and request.body:
                # RFC 3261 14.2 / RFC 3311 5.2: one offer at a time; the peer retries later.
                raise SipRequestError(491, "Request Pending")
            session = answer_as_uas(request, self.session_timers())
        except SipRequestError as exc:
            return core.respond(request, event.transaction, make_response(
                request, exc.status_hint, exc.reason, headers=exc.headers), now)
        leg = "in" if from_caller else "out"
        if self._changes_session(call, from_caller, request):
            return self._carry(call, event, from_caller, session, now, core)
        wanted = self._new_directions(call, leg, request)
        if wanted is not None:
            return self._carry_directions(call, event, from_caller, session, wanted, now, core)
        body = call.sdp_to_caller if from_caller else call.sdp_to_callee
        if request.method == "UPDATE" and not request.body:
            body = b""  # an UPDATE without an offer gets an answer without one
        headers = [("Contact", self.local.contact(event.transaction.peer.transport))]
        headers += session.headers if session is not None else ()
        self._set_timer(call, leg, session.leg(now) if session is not None else None)
        log.info("session_refreshed", call_id=call.inbound.call_id, method=request.method,
                 leg=leg)
        return core.respond(request, event.transaction, make_response(
            request, 200, headers=headers, body=body,
            content_type="application/sdp" if body else None), now)

    def _changes_session(self, call: Call, from_caller: bool, request: Request) -> bool:
        """Whether the request's offer changes the session rather than refreshing it."""
        if not request.body or call.lync is not None or call.lync_callee is not None:
            return False  # Lync's legs (ICE, SRTP) end here: their offers are answered here
        before = call.sdp_from_caller if from_caller else call.sdp_from_callee
        return request.body != before and _origin(request.body) != _origin(before)

    def _carry(self, call: Call, event: RequestReceived, from_caller: bool,
               session: UasTimer | None, now: float, core: Endpoint) -> list[Event]:
        """The offer goes to the other leg in a request of ours; its answer comes back."""
        request = event.request
        body = request.body
        if call.bridge is not None:
            try:
                offer = parse_sdp(body)
                why = "" if len(offer.media) == len(call.toward_callee) else (
                    "a re-offer that adds or removes streams is not relayed")
            except SdpError as exc:
                why = str(exc)
            if why:
                return core.respond(request, event.transaction, make_response(
                    request, 488, reason_phrase("Not Acceptable Here", why)), now)
            # The offerer's new addresses take effect now: RFC 3264 8.3.1, it must be ready
            # to receive on them; what it sends latches anyway.
            call.bridge.repoint(caller_side=from_caller, remotes=remote_addresses(offer))
            ports = call.toward_callee if from_caller else call.toward_caller
            body = anchored(offer, self.local.address, ports,
                            rule_cap(call.decision.rule)).to_bytes()
        return self._send_change(call, event, from_caller, InDialog(
            call, "out" if from_caller else "in", "relay", origin=event.transaction,
            origin_request=request, session=session, sent_body=body),
            request.headers.get("Content-Type"), now, core)

    def _new_directions(self, call: Call, leg: str, request: Request) -> Directions | None:
        """On a call whose Lync side ends here, the directions an offer from `leg` changes
        to (a hold or a resume), None when it keeps them (a refresh, or the second INVITE
        with Lync's remote candidates: answered here)."""
        if not request.body or (call.lync is None and call.lync_callee is None):
            return None
        try:
            wanted = directions(_sdp_of(request))
        except SdpError:
            return None  # answered here as before, with what the leg already has from us
        before = call.offered_directions.get(leg) or dict.fromkeys(wanted, "sendrecv")
        return wanted if wanted != before else None

    def _carry_directions(self, call: Call, event: RequestReceived, from_caller: bool,
                          session: UasTimer | None, wanted: Directions, now: float,
                          core: Endpoint) -> list[Event]:
        """A hold or resume on a call whose Lync side ends here: the other leg gets the
        description it last had from us with the offered directions; its answer's come back
        the same way (see `_directions_answered`)."""
        request = event.request
        base = call.sdp_to_callee if from_caller else call.sdp_to_caller
        try:
            body = restated(parse_sdp(base), wanted).to_bytes()
        except SdpError as exc:
            return core.respond(request, event.transaction, make_response(
                request, 488, reason_phrase("Not Acceptable Here", str(exc))), now)
        return self._send_change(call, event, from_caller, InDialog(
            call, "out" if from_caller else "in", "directions", origin=event.transaction,
            origin_request=request, session=session, sent_body=body, directions=wanted),
            "application/sdp", now, core)

    def _send_change(self, call: Call, event: RequestReceived, from_caller: bool,
                     pending: InDialog, content_type: str | None, now: float,
                     core: Endpoint) -> list[Event]:
        """The request of ours that takes a session change to the other leg."""
        assert call.in_dialog is not None and call.out_dialog is not None
        other, peer = ((call.out_dialog, call.out_peer) if from_caller
                       else (call.in_dialog, call.in_txn.peer))
        assert peer is not None
        timer = call.timers.get(pending.leg)
        headers = [("Contact", self.local.contact(peer.transport)), ("Supported", "timer")]
        if timer is not None:
            headers += uac_headers(timer.interval, self.session_timers().min_se,
                                   refresher=timer.we_refresh)
        relayed = other.create_request(event.request.method, self.local.via(peer.transport),
                                       headers=tuple(headers), body=pending.sent_body,
                                       content_type=content_type)
        call.relaying = pending
        log.info("session_change_relayed", call_id=call.inbound.call_id,
                 method=event.request.method, leg=pending.leg, kind=pending.purpose)
        return core.send_request(relayed, peer, now, tu_data=pending)[1]

    def _in_dialog_answered(self, sent: InDialog, response: Response | None, now: float,
                            core: Endpoint) -> list[Event]:
        """The answer to a request of ours inside the call (None: it timed out)."""
        call = sent.call
        if response is not None and response.status < 200:
            return []
        if call.state is not CallState.CONNECTED:
            return []
        status = 408 if response is None else response.status
        dialog, peer = self._leg(call, sent.leg)
        events: list[Event] = []
        if response is not None and status < 300 and response.cseq.method == "INVITE":
            ack = dialog.ack(self.local.via(peer.transport))
            events += TransactionLayer.send_stateless(ack, peer)
        if sent.purpose in ("relay", "directions"):
            call.relaying = None
            if response is None or status >= 300:
                return events + self._change_refused(sent, response, status, now, core)
            answered = (self._relay_answered if sent.purpose == "relay"
                        else self._directions_answered)
            return events + answered(sent, response, now, core)
        if sent.purpose == "refresh":
            return events + self._refresh_answered(sent, response, status, now, core)
        if status >= 300:
            # The guide's "Transaction failed UPDATE": media already flows; say so and go on.
            log.warning("updated_offer_refused", call_id=call.inbound.call_id, status=status,
                        reason=response.reason if response else "no answer")
        return events

    def _relay_answered(self, sent: InDialog, response: Response, now: float,
                        core: Endpoint) -> list[Event]:
        call = sent.call
        request = sent.origin_request
        assert request is not None
        from_caller = sent.leg == "out"
        body = response.body
        if call.bridge is not None and body:
            try:
                answer = parse_sdp(body)
            except SdpError as exc:
                log.warning("answer_sdp_unreadable", call_id=call.inbound.call_id,
                            error=str(exc))
            else:
                call.bridge.repoint(caller_side=not from_caller,
                                    remotes=remote_addresses(answer))
                ports = call.toward_caller if from_caller else call.toward_callee
                body = anchored(answer, self.local.address, ports,
                                rule_cap(call.decision.rule)).to_bytes()
        if request.body:
            if from_caller:
                call.sdp_from_caller, call.sdp_to_callee = request.body, sent.sent_body
            else:
                call.sdp_from_callee, call.sdp_to_caller = request.body, sent.sent_body
        if body:
            if from_caller:
                call.sdp_from_callee, call.sdp_to_caller = response.body, body
            else:
                call.sdp_from_caller, call.sdp_to_callee = response.body, body
        return self._answer_change(sent, response, body,
                                   response.headers.get("Content-Type"), now, core)

    def _directions_answered(self, sent: InDialog, response: Response, now: float,
                             core: Endpoint) -> list[Event]:
        """The other leg's answer to a hold or resume: its directions, restated in what the
        offering leg last had from us, are our answer to it."""
        call = sent.call
        request = sent.origin_request
        assert request is not None
        from_caller = sent.leg == "out"
        try:
            answered = directions(parse_sdp(response.body)) if response.body else {}
            answer = restated(parse_sdp(call.sdp_to_caller if from_caller
                                        else call.sdp_to_callee), answered,
                              answering=_sdp_of(request))
        except SdpError as exc:
            log.warning("answer_sdp_unreadable", call_id=call.inbound.call_id,
                        error=str(exc))
            return self._change_refused(sent, None, 488, now, core)
        body = answer.to_bytes()
        if from_caller:
            call.sdp_to_callee, call.sdp_to_caller = sent.sent_body, body
        else:
            call.sdp_to_caller, call.sdp_to_callee = sent.sent_body, body
        call.offered_directions["in" if from_caller else "out"] = sent.directions
        log.info("session_directions_changed", call_id=call.inbound.call_id,
                 offered=sent.directions, answered=answered)
        return self._answer_change(sent, response, body, "application/sdp", now, core)

    def _change_refused(self, sent: InDialog, response: Response | None, status: int,
                        now: float, core: Endpoint) -> list[Event]:
        """The other leg refused (or never answered) a session change: so does our answer
        to the leg that asked; a leg that is gone takes the call with it."""
        origin, request = sent.origin, sent.origin_request
        assert origin is not None and request is not None
        reason = response.reason if response is not None else "Request Timeout"
        events = core.respond(request, origin, make_response(request, status, reason), now)
        if status in DIALOG_GONE:  # the other leg is gone: so is the call
            events += self._hang_up(sent.call, f"session change failed on the {sent.leg} leg:"
                                    f" {status} {reason}", now, core)
        return events

    def _answer_change(self, sent: InDialog, response: Response, body: bytes,
                       content_type: str | None, now: float, core: Endpoint) -> list[Event]:
        """Our 2xx to the leg that asked for a session change, timers of both legs renewed."""
        call, origin, request = sent.call, sent.origin, sent.origin_request
        assert origin is not None and request is not None
        self._set_timer(call, sent.leg, uac_result(response, now))
        origin_leg = "in" if sent.leg == "out" else "out"
        session = sent.session
        self._set_timer(call, origin_leg, session.leg(now) if session is not None else None)
        headers = [("Contact", self.local.contact(origin.peer.transport))]
        headers += session.headers if session is not None else ()
        return core.respond(request, origin, make_response(
            request, 200, headers=headers, body=body,
            content_type=content_type if body else None), now)

    def _refresh_answered(self, sent: InDialog, response: Response | None, status: int,
                          now: float, core: Endpoint) -> list[Event]:
        call = sent.call
        if response is not None and status < 300:
            self._set_timer(call, sent.leg, uac_result(response, now))
            return []
        timer = call.timers.get(sent.leg)
        if response is not None and status == 422 and timer is not None:
            interval = retry_interval(response, timer.interval)
            if interval is not None:
                timer.interval = interval
                return self._send_refresh(call, sent.leg, timer, now, core)
        reason = response.reason if response is not None else "no answer"
        log.warning("session_refresh_failed", call_id=call.inbound.call_id, leg=sent.leg,
                    status=status, reason=reason)
        if status in DIALOG_GONE:
            return self._hang_up(call, f"session refresh failed on the {sent.leg} leg: "
                                 f"{status} {reason}", now, core)
        return []  # the session stays up until it expires, unless a later refresh works

    def next_deadline(self) -> float | None:
        heap = self._deadlines
        while heap and self._stale(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def handle_timeout(self, now: float, core: Endpoint) -> list[Event]:
        events: list[Event] = []
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            call = self._live(entry)
            if call is None:
                continue
            leg = entry[3]
            if leg == RINGING:
                events += self._ring_locally(call, now, core)
                continue
            timer = call.timers[leg]
            if timer.we_refresh and not timer.pending:
                events += self._send_refresh(call, leg, timer, now, core)
            else:
                who = "caller" if leg == "in" else "callee"
                events += self._hang_up(call, f"session expired: no refresh from the {who} "
                                        f"in {timer.interval} s", now, core)
        return events

    def _live(self, entry: tuple[float, int, int, str]) -> Call | None:
        """The call an entry is due for, or None when the entry is stale."""
        deadline, _, call_id, leg = entry
        call = self.calls.get(call_id)
        if call is None:
            return None
        if leg == RINGING:
            waiting = call.state in (CallState.RESOLVING, CallState.CALLING)
            return call if waiting and not call.provisional_sent else None
        if call.state is not CallState.CONNECTED:
            return None
        timer = call.timers.get(leg)
        return call if timer is not None and timer.deadline() == deadline else None

    def _stale(self, entry: tuple[float, int, int, str]) -> bool:
        return self._live(entry) is None

    def _set_timer(self, call: Call, leg: str, timer: LegTimer | None) -> None:
        if timer is None:
            call.timers.pop(leg, None)
            return
        call.timers[leg] = timer
        self._push(timer.deadline(), call, leg)

    def _push(self, deadline: float, call: Call, leg: str) -> None:
        heap = self._deadlines
        heapq.heappush(heap, (deadline, next(self._seq), call.id, leg))
        if len(heap) > 1024 and len(heap) > 4 * len(self.calls):
            heap[:] = [entry for entry in heap if not self._stale(entry)]
            heapq.heapify(heap)

    def _send_refresh(self, call: Call, leg: str, timer: LegTimer, now: float,
                      core: Endpoint) -> list[Event]:
        """RFC 4028 7.4: UPDATE where the peer allows it (no offer needed), else a
        re-INVITE with the session description that leg already has from us."""
        dialog, peer = self._leg(call, leg)
        told = call.inbound if leg == "in" else call.out_answer
        method = "UPDATE" if told is not None and "update" in told.tokens("allow") else "INVITE"
        body = b"" if method == "UPDATE" else (
            call.sdp_to_caller if leg == "in" else call.sdp_to_callee)
        headers = (("Contact", self.local.contact(peer.transport)), ("Supported", "timer"),
                   *uac_headers(timer.interval, self.session_timers().min_se, refresher=True))
        refresh = dialog.create_request(method, self.local.via(peer.transport), headers=headers,
                                        body=body,
                                        content_type="application/sdp" if body else None)
        timer.pending = True
        self._set_timer(call, leg, timer)  # now due at expiry, should the refresh go unanswered
        log.info("session_refresh_sent", call_id=call.inbound.call_id, leg=leg, method=method)
        return core.send_request(refresh, peer, now, tu_data=InDialog(call, leg, "refresh"))[1]

    def _leg(self, call: Call, leg: str) -> tuple[Dialog, Peer]:
        dialog = call.in_dialog if leg == "in" else call.out_dialog
        peer = call.in_txn.peer if leg == "in" else call.out_peer
        assert dialog is not None and peer is not None
        return dialog, peer

    def _dialog_peer(self, dialog: Dialog, call: Call) -> Peer:
        """In-dialog requests toward the callee go where its INVITE went: the same
        connection for TCP/TLS (its Contact is usually not reachable from here)."""
        assert call.out_peer is not None
        return call.out_peer

    def active(self) -> list[dict[str, object]]:
        """The calls in progress, for the status API."""
        return [{
            "id": call.id, "state": call.state.value, "in_call_id": call.inbound.call_id,
            "out_call_id": call.out_invite.call_id if call.out_invite else None,
            "caller": str(call.inbound.from_.uri), "alias": call.inbound.uri_text,
            "target": call.target_uri, "decision": call.decision.to_json(),
            "started": call.record.started if call.record else None,
            "media": call.media.counters() if call.media is not None else None,
        } for call in self.calls.values()]

    def _mark_ringing(self, call: Call) -> None:
        if call.record is not None and call.record.ringing is None:
            call.record.ringing = self.wall_clock()

    def _media_timed_out(self, call_id: int, reason: str, core: Endpoint) -> None:
        call = self.calls.get(call_id)
        if call is not None:
            self.hooks.emit(lambda now: self._hang_up(call, reason, now, core))

    def _hang_up(self, call: Call, reason: str, now: float, core: Endpoint) -> list[Event]:
        """The gateway ends a connected call itself (media timeout): BYE on both legs."""
        if call.state is not CallState.CONNECTED:
            return []
        events: list[Event] = []
        for dialog, peer in ((call.in_dialog, call.in_txn.peer),
                             (call.out_dialog, call.out_peer)):
            if dialog is not None and peer is not None:
                bye = dialog.create_request("BYE", self.local.via(peer.transport),
                                            headers=(("Reason", f'SIP;cause=200;text="{reason}"'),))
                events += core.send_request(bye, peer, now)[1]
                self._by_dialog.pop((dialog.call_id, dialog.local_tag), None)
        self._end(call, reason, "gateway")
        return events + self._abandon_relay(call, now, core)

    def _abandon_relay(self, call: Call, now: float, core: Endpoint) -> list[Event]:
        """RFC 3261 15.1.2: a session change still in flight when the call ends is
        answered 487, not left for its sender to time out."""
        pending, call.relaying = call.relaying, None
        if pending is None or pending.origin is None or pending.origin_request is None:
            return []
        request = pending.origin_request
        return core.respond(request, pending.origin, make_response(request, 487), now)

    def _end(self, call: Call, why: str, by: str = "gateway") -> None:
        if call.state is CallState.ENDED:
            return
        call.state = CallState.ENDED
        self.calls.pop(call.id, None)
        if call.out_txn is not None and call.out_txn.state is State.ACCEPTED:
            # Timer M keeps the answered INVITE's transaction for 32 s: without this it
            # would keep the whole call, a cycle only the garbage collector frees. (One
            # still unanswered needs the call for its CANCEL.)
            call.out_txn.tu_data = None
        if call.bridge is not None:
            if call.bridge.media is not None:
                self._add_media(call, call.bridge.media.counters())
            call.bridge.close()
        for side in (call.lync, call.lync_callee):
            if side is not None:
                if side.media is not None:
                    side.media.stop()
                    self._add_media(call, side.media.counters())
                self.hooks.spawn(side.close())
        log.info("call_ended", call_id=call.inbound.call_id, reason=why, ended_by=by)
        outcome = "answered" if call.in_dialog is not None else (
            "cancelled" if call.cancelled else "failed")
        self._tally(outcome, call.decision.outcome)
        if call.record is not None:
            call.record.ended, call.record.end_cause = self.wall_clock(), why
            call.record.ended_by = by
            self._write(call.record)

    def _add_media(self, call: Call, counters: dict[str, dict[str, dict[str, object]]]) -> None:
        """An ended call's media counters: into its CDR and the node's totals."""
        if call.record is not None:
            call.record.media = dict(counters)
        for by_direction in counters.values():
            for stats in by_direction.values():
                for key in ("packets", "bytes", "lost"):
                    self.media_totals[key] += int(str(stats[key]))
                dropped = stats["dropped"]
                assert isinstance(dropped, dict)
                self.media_totals["dropped"] += sum(dropped.values())

    def _tally(self, outcome: str, decision: str) -> None:
        key = (outcome, decision)
        self.outcomes[key] = self.outcomes.get(key, 0) + 1


@dataclass(eq=False, slots=True)
class InDialog:
    """Marks the client transaction of a request of ours inside a call: the second INVITE
    toward Lync (`remote-candidates`), a session refresh, or a session change relayed from
    the other leg (its server transaction waits for our answer): the offer itself, or on a
    call whose Lync side ends here the hold or resume it asks for (`directions`)."""

    call: Call
    leg: str  # "in" | "out": the leg the request went out on
    purpose: str  # "remote-candidates" | "refresh" | "relay" | "directions"
    origin: ServerTransaction | None = None
    origin_request: Request | None = None
    session: UasTimer | None = None  # the originating leg's timer for our answer to it
    sent_body: bytes = b""
    directions: Directions = field(default_factory=dict)  # a hold or resume: as offered


def _user(uri: object) -> str | None:
    return uri.user if isinstance(uri, SipUri) else None


def _crashed(call: Call, exc: Exception) -> str:
    """A bug met while setting a call up, logged with its traceback: what the caller's 500
    says."""
    log.error("call_setup_crashed", call_id=call.inbound.call_id, exc_info=exc)
    return f"call set-up failed: {type(exc).__name__}"


_REASONS = {404: "Not Found", 408: "Request Timeout", 480: "Temporarily Unavailable",
            482: "Loop Detected", 500: "Server Internal Error", 503: "Service Unavailable"}


def _media_for_lync(request: Request, decision: Decision) -> bool:
    """Whether a call's media is this node's business even with SIP media not anchored: a
    leg toward Lync, or a caller's offer that may be Lync's ICE (whose every SDP names its
    ice-ufrag). Otherwise the SDP goes through unread, as a proxy's would, and a signalling-
    only call saves parsing it."""
    rule = decision.rule
    return (rule is not None and rule.outgoing_protocol == "mssip") or (
        b"ice-ufrag" in request.body)


def _offers(request: Request) -> tuple[SessionDescription | None, SessionDescription | None]:
    """(ICE offer, anchorable offer) of an INVITE, the body parsed once; at most one is set.

    The ICE offer, to answer when the caller speaks ICE: the RFC 5245 part of a multipart
    body (over the draft-6 fallback), or a single SDP with ICE credentials. The anchorable
    one: a single application/sdp body without ICE, which the relay can anchor as it is."""
    content_type = request.content_type
    if not request.body or content_type is None:
        return None, None
    multipart = content_type.type.startswith("multipart/")
    if not multipart and content_type.type != "application/sdp":
        return None, None
    offer = _sdp_of(request)
    if wants_ice(offer):
        return offer, None
    return None, (None if multipart else offer)


def _sdp_of(request: Request) -> SessionDescription:
    """The session description a request carries: its SDP, or the SDP part of a multipart
    body (the RFC 5245 one over the draft-6 fallback)."""
    content_type = request.content_type
    if content_type is not None and content_type.type.startswith("multipart/"):
        return parse_sdp(pick_sdp(split(request.body, _boundary(request))).body)
    return parse_sdp(request.body)


def _origin(body: bytes) -> bytes | None:
    """The o= line: an offer with a new version changes the session (RFC 3264 8)."""
    for line in body.splitlines():
        if line.startswith(b"o="):
            return line.strip()
    return None


def _boundary(request: Request) -> str:
    """The boundary of a multipart body ('' for any other body)."""
    content_type = request.content_type
    if content_type is None or not content_type.type.startswith("multipart/"):
        return ""
    return content_type.param("boundary") or ""


def _cancel_for(invite: Request) -> Request:
    """CANCEL for our INVITE (RFC 3261 9.1): same Request-URI, top Via, From, To, Call-ID,
    CSeq number, Route."""
    cancel = Request("CANCEL", invite.uri_text)
    h = cancel.headers
    h.add("Via", invite.headers.get_all("Via")[0])
    for route in invite.headers.get_all("Route"):
        h.add("Route", route)
    h.add("Max-Forwards", "70")
    h.add("From", invite.headers.get("From") or "")
    h.add("To", invite.headers.get("To") or "")
    h.add("Call-ID", invite.call_id)
    h.add("CSeq", f"{invite.cseq.seq} CANCEL")
    h.add("Content-Length", "0")
    return cancel
