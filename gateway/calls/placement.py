"""Placing the callee leg and carrying its answers back to the caller.

Its targets: a registered device's bindings, the rule's `call_via` server, or the
destination resolved by RFC 3263 (at once when no look-up is due, else by the adapter). The
INVITE goes to the first; a 503 or a timeout moves on to the next (failover); a 415 for a
multipart body or a 422 for a short session interval gets the INVITE again, changed as the
refusal asks. Provisionals are relayed (a local 180 if the callee says nothing for 2 s, so
Lync does not give up), the 2xx connects the call, and any other final response fails it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from gateway import logs
from gateway.calls.actions import ICE_TIMEOUT, Connect, Prepare
from gateway.calls.bodies import boundary
from gateway.calls.call import Call, CallState
from gateway.calls.context import Context
from gateway.calls.refusals import refusal
from gateway.calls.registrar import aor_of
from gateway.calls.session import send_offer
from gateway.calls.teardown import fail, hang_up, send_cancel
from gateway.resolver.rfc3263 import ResolveError, Target
from gateway.sip.dialog import Dialog, DialogState
from gateway.sip.errors import SipError, SipParseError, SipRequestError
from gateway.sip.message import Request, Response, make_response, new_branch, new_call_id
from gateway.sip.session_timer import retry_interval, uac_headers, uac_result
from gateway.sip.transaction_layer import Event, TransactionLayer
from gateway.sip.uri import SipUri, parse_uri
from gateway.transport.peer import Peer
from ice.errors import IceError
from routing.engine import Decision
from sdp.errors import SdpError
from sdp.multipart import pick_sdp, split

if TYPE_CHECKING:
    from gateway.sip.endpoint import Endpoint

log = logs.get(__name__)
LOCAL_RINGING_AFTER = 2.0  # Lync cancels a call that sees only 100 Trying for ~10 s
# A call not answered by then is given up: RFC 3261's Timer C (a proxy's "more than three
# minutes") for a callee that keeps ringing, and the bound on a set-up that never finished.
SETUP_LIMIT = 181.0
# What the caller's INVITE says of the caller, carried to the callee line by line as written.
# What it says of the caller's software (User-Agent, Allow, Supported, Accept) is not: each
# leg is told what the gateway itself does (RFC 3261 20.5, 20.37), and a Lync caller's
# product and option tags would make a SIP callee, or a second gateway, take the call for
# MS-SIP. Session timers are negotiated per leg.
CARRIED = ("P-Asserted-Identity",)
CARRIED_TOWARD_LYNC = (*CARRIED, "Ms-Conversation-ID")  # Lync's conversation, on Lync's side
# From parameters that belong to the caller's own leg: Lync's endpoint ID.
NOT_CARRIED_FROM = frozenset({"tag", "epid"})


def target_uri(decision: Decision) -> str | None:
    """The callee leg's Request-URI: the service's target, or the rule's destination when
    it is a SIP address."""
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


def set_up(ctx: Context, call: Call, now: float, core: Endpoint) -> list[Event]:
    """The callee leg's targets (at once when no DNS look-up is due) and the call's media
    resources, asked of the adapter; it places the call when both are ready. Whatever goes
    wrong, the caller gets a final answer: a call nobody answers holds its transaction, and
    Lync its user, for 32 s."""
    try:
        uri, targets = targets_now(ctx, call)
    except Exception as exc:
        status, reason = refusal(exc, call.inbound.call_id)
        return _failed(ctx, call, status, reason, now, core)
    call.out.targets = targets or []
    rule = call.decision.rule
    ctx.actions.append(Prepare(
        call.id, call.media, resolve=None if targets is not None else uri,
        federation=rule is not None and rule.outgoing_protocol == "mssip"))
    return []


def targets_now(ctx: Context, call: Call) -> tuple[SipUri, list[Target] | None]:
    """Where the callee leg goes (the URI to resolve) and, when no DNS is needed, its
    targets already. Raises SipRequestError for a call that cannot be placed."""
    uri = parse_uri(call.target_uri)
    assert isinstance(uri, SipUri)
    rule = call.decision.rule
    if rule is not None and rule.target in ("registered_or_external", "registered_only"):
        aor = aor_of(uri)
        routes = ctx.registrar.routes(aor) if ctx.registrar and aor else []
        if routes:
            # A registered device: its newest binding, over its flow (through the cluster
            # node holding it, when another does).
            call.target_uri = routes[0][0].contact
            return uri, [target for _, target in routes]
        if rule.target == "registered_only":
            raise SipRequestError(480, f"{aor or call.target_uri} is not registered")
    settings = call.settings
    via = rule.call_via if rule is not None else "dns"
    if via == "dns" and rule is not None and rule.outgoing_protocol == "mssip":
        # The guide: toward Lync, the outgoing location's Lync server unless the rule names
        # one (the node's own location when the rule's is automatic).
        via = settings.location_lync_server.get(
            call.decision.outgoing_location or settings.location, "dns")
    hop = settings.next_hops.get(via)
    if hop is not None:
        # The Request-URI stays the destination; the request goes to the named server (an
        # outbound proxy), found the way a SIP URI naming it would be.
        host = f"[{hop.address}]" if ":" in hop.address else hop.address
        hop_uri = parse_uri(f"sip:{host}:{hop.port};transport={hop.transport.lower()}")
        assert isinstance(hop_uri, SipUri)
        uri = hop_uri
    try:
        return uri, ctx.resolver.resolve_now(uri)
    except ResolveError as exc:
        raise SipRequestError(404, str(exc)) from exc


def prepared(ctx: Context, call: Call, targets: list[Target] | None,
             error: BaseException | None, now: float, core: Endpoint) -> list[Event]:
    """The adapter took the call's media resources and found its targets (`targets` None:
    they were known already): place it, or fail it with what went wrong."""
    if call.state is CallState.ENDED:
        return []
    if error is not None:
        status, reason = refusal(error, call.inbound.call_id)
        return _failed(ctx, call, status, reason, now, core)
    if targets is not None:
        call.out.targets = targets
    call.out.targets = [t for t in call.out.targets if not ctx.local.is_self(t)]
    if not call.out.targets:
        # A rule that leaves the alias unchanged sends sip:x@<this node> back here, where it
        # would be routed again until Max-Forwards runs out: refuse it at once.
        return _failed(ctx, call, 482, f"{call.target_uri} routes back to this node", now, core)
    return place(ctx, call, now, core)


def place(ctx: Context, call: Call, now: float, core: Endpoint) -> list[Event]:
    """The INVITE of the callee leg, to the first target left."""
    out = call.out
    if call.cancelled or (call.answered and not call.handing_on):
        return []
    if not out.targets:
        return _failed(ctx, call, 404, "no address for " + call.target_uri, now, core)
    target = out.targets[0]
    inbound, settings = call.inbound, call.settings
    request = Request("INVITE", call.target_uri)
    h = request.headers
    h.add("Via", f"{ctx.local.via(target.transport, target.address)};branch={new_branch()};rport")
    h.add("Max-Forwards", str(max(0, (inbound.max_forwards or 70) - 1)))
    rule = call.decision.rule
    toward_lync = rule is not None and rule.outgoing_protocol == "mssip"
    identity = lync_identity(call) if toward_lync else None
    if identity is not None:
        display = f"{inbound.from_.display} " if inbound.from_.display else ""
        h.add("From", f"{display}<{identity}>;tag={call.in_tag}")
    else:
        caller = inbound.from_
        h.add("From", str(caller.with_params((*((n, v) for n, v in caller.params
                                                 if n not in NOT_CARRIED_FROM),
                                               ("tag", call.in_tag)))))
    h.add("To", f"<{call.target_uri}>")
    h.add("Call-ID", new_call_id(ctx.local.address))
    h.add("CSeq", "1 INVITE")
    h.add("Contact", ctx.local.contact(target.transport, target.address))
    for name in CARRIED_TOWARD_LYNC if toward_lync else CARRIED:
        for value in inbound.headers.lines(name):
            h.add(name, value)
    h.add("Allow", core.allow)
    h.add("Supported", "timer")
    if out.interval:
        for name, value in uac_headers(out.interval, settings.timers.min_se, refresher=False):
            h.add(name, value)
    if out.single_part:
        request.set_body(out.single_part, "application/sdp")
    else:
        try:
            request.set_body(*call.media.offer(
                (inbound.body, inbound.headers.get("Content-Type")),
                ctx.local.address_for(target.address)))
        except SdpError as exc:  # nothing the callee could take
            return _failed(ctx, call, exc.status_hint, str(exc), now, core)
    call.callee.sdp_to = request.body
    peer = Peer(target.transport, target.address, target.port, server_name=target.host)
    txn, events = core.send_request(request, peer, now, tu_data=call)
    out.invite, out.txn, call.callee.peer = request, txn, peer
    if not call.handing_on:  # the caller's leg of a reception's call stays connected
        call.state = CallState.CALLING
    call.record.out_call_id = request.call_id
    log.info("call_placed", call_id=inbound.call_id, leg="out", out_call_id=request.call_id,
             target=f"{target.transport.lower()}:{target.address}:{target.port}",
             uri=call.target_uri)
    return events


def lync_identity(call: Call) -> str | None:
    """Who the caller is toward Lync: a user of the gateway's domain (the guide's Infinity
    domain, the outgoing location's override first), which the Lync pool trusts for this
    application; None when no domain is set."""
    domain = call.settings.mssip_domain(call.decision.outgoing_location)
    if not domain:
        return None
    return f"sip:{_user(call.inbound.from_.uri) or 'gateway'}@{domain}"


def next_target(ctx: Context, call: Call, now: float, core: Endpoint, why: str) -> list[Event]:
    """RFC 3263 failover: the target that failed is dropped and the next one tried."""
    targets = call.out.targets
    failed = targets.pop(0) if targets else None
    log.info("target_failed", call_id=call.inbound.call_id, reason=why,
             target=None if failed is None else f"{failed.address}:{failed.port}")
    if targets and not call.cancelled:
        return place(ctx, call, now, core)
    status = 408 if why == "timeout" else 503
    return _failed(ctx, call, status, f"every target failed (last: {why})", now, core)


def response(ctx: Context, call: Call, answer: Response, now: float,
             core: Endpoint) -> list[Event]:
    """A response of the callee leg to our INVITE."""
    status = answer.status
    if status < 200:
        call.out.heard = True
        if call.cancelled:
            return send_cancel(call, now, core)
        if status == 100 or call.answered:
            return []
        call.state = CallState.EARLY
        call.provisional_sent = True
        _mark_ringing(ctx, call)
        return core.respond(call.inbound, call.in_txn, _mirror(ctx, call, answer, status), now)
    if status < 300:
        return connected(ctx, call, answer, now, core)
    if status == 503 and len(call.out.targets) > 1 and not call.cancelled:
        return next_target(ctx, call, now, core, "503")
    if not call.cancelled and _retry(call, answer):
        return place(ctx, call, now, core)
    return _failed(ctx, call, status, answer.reason, now, core)


def _retry(call: Call, answer: Response) -> bool:
    """Whether the same target should get the INVITE again, changed as the refusal asks:
    415 for a multipart body (RFC 3261 21.4.13; Lync's two-part offers) gets the SDP part
    alone, 422 a longer session interval (RFC 4028 7.3)."""
    out = call.out
    if answer.status == 415 and not out.single_part and boundary(call.inbound):
        try:
            out.single_part = pick_sdp(split(call.inbound.body, boundary(call.inbound))).body
        except SdpError:
            return False  # nothing better to send: the 415 goes to the caller
        log.info("multipart_refused", call_id=call.inbound.call_id)
        return True
    if answer.status == 422:
        interval = retry_interval(answer, out.interval)
        if interval is not None and interval <= 86400:
            out.interval = interval
            return True
    return False


def connected(ctx: Context, call: Call, answer: Response, now: float,
              core: Endpoint) -> list[Event]:
    """The callee's 2xx: ACK it, answer the caller, and the call is up."""
    out, callee, caller = call.out, call.callee, call.caller
    peer = callee.peer
    assert out.invite is not None and peer is not None and caller.dialog is not None
    via = ctx.local.via(peer.transport, peer.host)
    known = callee.dialog
    if known is not None and answer.to.tag == known.remote_tag:
        # A retransmitted 2xx: our ACK was lost; send it again (RFC 3261 13.2.2.4).
        return TransactionLayer.send_stateless(known.ack(via), peer)
    try:
        dialog = Dialog.from_response(out.invite, answer)
    except SipError as exc:
        # Nothing to send the ACK and BYE by: the callee gives up on its 2xx by itself.
        log.warning("answer_unusable", call_id=call.inbound.call_id, error=str(exc))
        return _failed(ctx, call, 502, f"the callee's answer is unusable: {exc.reason}", now,
                       core)
    events = TransactionLayer.send_stateless(dialog.ack(via), peer)
    if call.cancelled or (call.answered and not call.handing_on):
        # Answered after we gave up on it: hang up the leg we no longer want.
        return events + core.send_request(dialog.create_request("BYE", via), peer, now)[1]
    callee.dialog = dialog
    try:
        ok = _mirror(ctx, call, answer, 200)
    except SdpError as exc:
        events += core.send_request(dialog.create_request("BYE", via), peer, now)[1]
        return events + _failed(ctx, call, exc.status_hint, str(exc), now, core)
    if call.media.connects:
        ctx.actions.append(Connect(call.id, call.media, ICE_TIMEOUT))
    callee.sdp_from, out.answer = answer.body, answer
    callee.allows_update = "update" in answer.tokens("allow")
    callee.timer = uac_result(answer, now)
    ctx.media_due(call, now)
    ctx.by_dialog[(dialog.call_id, dialog.local_tag)] = call
    if call.handing_on:
        ctx.timer_due(call, callee)
        return events + _handed_on_by(call).joined(ctx, call, ok.body, now, core)
    caller.sdp_to = ok.body
    caller.dialog.state = DialogState.CONFIRMED
    call.state = CallState.CONNECTED
    caller.timer = call.in_session.leg(now) if call.in_session else None
    ctx.timer_due(call, caller)
    ctx.timer_due(call, callee)
    call.record.answered = ctx.wall_clock()
    ctx.record(call.record, "update")
    ctx.by_dialog[(call.inbound.call_id, call.in_tag)] = call
    log.info("call_connected", call_id=call.inbound.call_id, leg="both",
             out_call_id=dialog.call_id)
    return events + core.respond(call.inbound, call.in_txn, ok, now)


def _failed(ctx: Context, call: Call, status: int, reason: str, now: float,
            core: Endpoint) -> list[Event]:
    """The callee leg failed: the call with it, or, for a leg placed for a caller the node
    answered itself, back to whoever answered it (the caller's leg stays)."""
    if call.handing_on and call.connected:
        return _handed_on_by(call).leg_failed(ctx, call, f"{status} {reason}", now, core)
    return fail(ctx, call, status, reason, now, core)


class HandsOn(Protocol):
    """Who answered the caller with media of its own and placed the callee leg for it
    (`Call.parked`): told how that leg went."""

    def joined(self, ctx: Context, call: Call, body: bytes, now: float,
               core: Endpoint) -> list[Event]: ...

    def leg_failed(self, ctx: Context, call: Call, why: str, now: float,
                   core: Endpoint) -> list[Event]: ...


def _handed_on_by(call: Call) -> HandsOn:
    """The reception (a meeting entered there included), else the meeting whose lobby
    answered a caller that dialled it."""
    owner: HandsOn | None = call.reception if call.reception is not None else call.meeting
    assert owner is not None
    return owner


def _mirror(ctx: Context, call: Call, answer: Response, status: int) -> Response:
    """The callee's answer, as our answer on the caller leg, its SDP as the media side
    makes it (raises SdpError for a final answer the media side cannot use)."""
    headers = [("Contact", ctx.local.contact(call.in_txn.peer.transport, call.in_txn.peer.host))]
    headers += [(n, v) for n in ("Supported", "Allow") for v in answer.headers.get_all(n)]
    if 200 <= status < 300 and call.in_session is not None:
        headers += call.in_session.headers  # the caller's leg timer is ours to state
    body, content_type = call.media.answer(
        (answer.body, answer.headers.get("Content-Type")), final=status >= 200)
    return make_response(call.inbound, status, answer.reason, to_tag=call.in_tag,
                         headers=headers, body=body, content_type=content_type if body else None)


def media_connected(ctx: Context, call: Call | None, error: BaseException | None, now: float,
                    core: Endpoint) -> list[Event]:
    """ICE toward Lync completed (or failed, `error`): media flows, and a callee that is
    Lync gets its second offer; a failure hangs the call up."""
    ctx.stats.ice_outcome(error is None)
    if error is not None:
        reason = str(error) if isinstance(error, IceError) else refusal(
            error, call.inbound.call_id if call else "")[1]
        log.warning("ice_failed", call_id=call.inbound.call_id if call else None,
                    reason=reason)
        if call is None:
            return []
        return hang_up(ctx, call, f"ICE toward Lync failed: {reason}", now, core)
    if call is None or call.state is not CallState.CONNECTED:
        return []
    ctx.media_due(call, now)
    offer = call.media.updated_offer()
    if offer is None:
        return []
    return send_offer(ctx, call, call.callee, offer, now, core)


def set_up_too_long(ctx: Context, call: Call, now: float, core: Endpoint) -> list[Event]:
    """SETUP_LIMIT passed without an answer. A callee that rang all that time is told CANCEL
    and the caller 408; a call still waiting for its own set-up (its media or targets) has
    met a bug, and is ended as an internal error, counted, with whatever it held freed."""
    if call.state is CallState.RESOLVING:
        ctx.stats.stuck += 1
        log.error("call_setup_stuck", call_id=call.inbound.call_id, after=SETUP_LIMIT)
        return _failed(ctx, call, 500, f"internal error: set-up did not finish in "
                    f"{SETUP_LIMIT:g} s", now, core)
    call.cancelled = True  # a 2xx crossing our CANCEL is ACKed and hung up
    events = send_cancel(call, now, core) if call.out.heard else []
    return events + _failed(ctx, call, 408, f"no answer in {SETUP_LIMIT:g} s", now, core)


def ring_locally(ctx: Context, call: Call, now: float, core: Endpoint) -> list[Event]:
    """The callee has said nothing for LOCAL_RINGING_AFTER: a 180 of our own."""
    if call.answered or call.provisional_sent:
        return []
    call.provisional_sent = True
    _mark_ringing(ctx, call)
    return core.respond(call.inbound, call.in_txn, make_response(
        call.inbound, 180, "Ringing", to_tag=call.in_tag), now)


def _mark_ringing(ctx: Context, call: Call) -> None:
    if call.record.ringing is None:
        call.record.ringing = ctx.wall_clock()


def _user(uri: object) -> str | None:
    return uri.user if isinstance(uri, SipUri) else None
