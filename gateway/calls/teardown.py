"""How calls end: BYE from either leg, CANCEL from the caller, the gateway hanging up both
legs itself (media timeout, a session that expired, ICE that failed), a call that failed
before it was answered, and the bookkeeping every ending shares (`end`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway import logs
from gateway.calls.actions import Close
from gateway.calls.admission import reason_phrase
from gateway.calls.call import Call, CallState
from gateway.calls.context import Context
from gateway.sip.errors import SipError
from gateway.sip.message import Request, make_response
from gateway.sip.transaction_layer import CancelReceived, Event, RequestReceived
from gateway.sip.transaction_machines import State

if TYPE_CHECKING:
    from gateway.sip.endpoint import Endpoint

log = logs.get(__name__)
_REASONS = {404: "Not Found", 408: "Request Timeout", 480: "Temporarily Unavailable",
            482: "Loop Detected", 500: "Server Internal Error", 503: "Service Unavailable"}
# Failures the callee stands for; any other is the gateway's (or the network's).
_BY_CALLEE = frozenset({480, 486, 600, 603})


def end(ctx: Context, call: Call, why: str, by: str = "gateway") -> None:
    """The call is over: its media closed, counted, and its CDR written. Idempotent."""
    if call.state is CallState.ENDED:
        return
    call.state = CallState.ENDED
    ctx.calls.pop(call.id, None)
    txn = call.out.txn
    if txn is not None and txn.state is State.ACCEPTED:
        # Timer M keeps the answered INVITE's transaction for 32 s: without this it would
        # keep the whole call, a cycle only the garbage collector frees. (One still
        # unanswered needs the call for its CANCEL.)
        txn.tu_data = None
    relayed = call.media.relayed
    if relayed is not None:
        counters = relayed.counters()
        call.record.media = dict(counters)
        ctx.stats.media_ended(counters)
    ctx.actions.append(Close(call.media))
    if call.parked is not None:
        ctx.actions.append(Close(call.parked))
        call.parked = None
    log.info("call_ended", call_id=call.inbound.call_id, reason=why, ended_by=by)
    outcome = "answered" if call.record.answered is not None else (
        "cancelled" if call.cancelled else "failed")
    ctx.stats.ended(outcome, call.decision.outcome)
    call.record.ended, call.record.end_cause = ctx.wall_clock(), why
    call.record.ended_by = by
    call.record.video = call.media.video or None
    ctx.record(call.record)


def fail(ctx: Context, call: Call, status: int, reason: str, now: float,
         core: Endpoint) -> list[Event]:
    """The call failed before it was answered: the caller gets `status`."""
    events = leave_meeting(ctx, call, now, core)
    end(ctx, call, f"{status} {reason}", "callee" if status in _BY_CALLEE else "gateway")
    if call.answered:
        return events
    phrase = reason_phrase(_REASONS[status], reason) if status in _REASONS else reason
    response = make_response(call.inbound, status, phrase, to_tag=call.in_tag,
                             headers=(("Retry-After", "30"),) if status == 503 else ())
    return events + core.respond(call.inbound, call.in_txn, response, now)


def leave_meeting(ctx: Context, call: Call, now: float, core: Endpoint) -> list[Event]:
    """A call that joined (or was joining) a Lync meeting leaves its focus too."""
    return call.meeting.leave(ctx, call, now, core) if call.meeting is not None else []


def hang_up(ctx: Context, call: Call, reason: str, now: float, core: Endpoint) -> list[Event]:
    """The gateway ends a connected call itself: BYE on both legs, with the reason."""
    if call.state is not CallState.CONNECTED:
        return []
    events: list[Event] = []
    for leg in (call.caller, call.callee):
        dialog, peer = leg.dialog, leg.peer
        if dialog is None or peer is None:
            continue
        ctx.by_dialog.pop((dialog.call_id, dialog.local_tag), None)
        try:
            bye = dialog.create_request("BYE", ctx.local.via(peer.transport, peer.host), headers=(
                ("Reason", f'SIP;cause=200;text="{reason}"'),))
        except SipError as exc:  # a route set we cannot follow: the other leg still ends
            log.warning("bye_not_sent", call_id=call.inbound.call_id, leg=leg.role,
                        error=str(exc))
            continue
        events += core.send_request(bye, peer, now)[1]
    events += drop_unanswered(call, now, core) + leave_meeting(ctx, call, now, core)
    end(ctx, call, reason, "gateway")
    return events + abandon_pending(ctx, call, now, core)


def abandon_pending(ctx: Context, call: Call, now: float, core: Endpoint) -> list[Event]:
    """RFC 3261 15.1.2: a session change still in flight when the call ends is answered
    487, not left for its sender to time out."""
    pending, call.pending = call.pending, None
    if pending is None or pending.origin is None or pending.origin_request is None:
        return []
    request = pending.origin_request
    return core.respond(request, pending.origin, make_response(request, 487), now)


def bye(ctx: Context, event: RequestReceived, now: float, core: Endpoint) -> list[Event]:
    """A BYE from either leg: 200 to it, BYE to the other leg, the call ended."""
    request = event.request
    key = (request.call_id, request.to.tag or "")
    call = ctx.by_dialog.get(key)
    if call is None:
        return core.respond(request, event.transaction, make_response(request, 481), now)
    leg = call.caller if request.call_id == call.inbound.call_id else call.callee
    other = call.other(leg)
    assert leg.dialog is not None
    try:
        leg.dialog.on_request(request)
    except SipError as exc:
        return core.respond(request, event.transaction,
                            make_response(request, exc.status_hint, exc.reason), now)
    del ctx.by_dialog[key]
    events = core.respond(request, event.transaction, make_response(request, 200), now)
    sent: list[Event] = []
    if other.dialog is not None and other.peer is not None:  # none on a call the node took
        ctx.by_dialog.pop((other.dialog.call_id, other.dialog.local_tag), None)
        try:
            sent = core.send_request(other.dialog.create_request(
                "BYE", ctx.local.via(other.peer.transport, other.peer.host)), other.peer, now)[1]
        except SipError as exc:
            log.warning("bye_not_sent", call_id=call.inbound.call_id, leg=other.role,
                        error=str(exc))
    sent += drop_unanswered(call, now, core) + leave_meeting(ctx, call, now, core)
    who = leg.role.party
    end(ctx, call, f"BYE from the {who}", who)
    return events + sent + abandon_pending(ctx, call, now, core)


def cancel(ctx: Context, event: CancelReceived, now: float, core: Endpoint) -> list[Event]:
    """The caller gave up before the call was answered: 487 to its INVITE, and CANCEL to
    the callee once it has been heard from (RFC 3261 9.1): one that never answers is left
    to Timer B, and one that answers 2xx gets ACK and BYE."""
    call = event.invite.tu_data
    if not isinstance(call, Call) or call.answered:
        return []
    call.cancelled = True
    events = send_cancel(call, now, core) if call.out.heard else []
    events += leave_meeting(ctx, call, now, core)
    end(ctx, call, "cancelled by the caller", "caller")
    return events + core.respond(call.inbound, call.in_txn, make_response(
        call.inbound, 487, to_tag=call.in_tag), now)


def drop_unanswered(call: Call, now: float, core: Endpoint) -> list[Event]:
    """An answered call ending while the callee leg the reception placed for its caller is
    still unanswered: that leg is cancelled (a 2xx crossing it gets ACK and BYE)."""
    if not call.handing_on or call.callee.dialog is not None:
        return []
    call.cancelled = True
    return send_cancel(call, now, core) if call.out.heard else []


def send_cancel(call: Call, now: float, core: Endpoint) -> list[Event]:
    out, peer = call.out, call.callee.peer
    if out.cancel_sent or out.invite is None or peer is None:
        return []
    out.cancel_sent = True
    return core.send_request(cancel_for(out.invite), peer, now)[1]


def cancel_for(invite: Request) -> Request:
    """CANCEL for our INVITE (RFC 3261 9.1): same Request-URI, top Via, From, To, Call-ID,
    CSeq number, Route."""
    request = Request("CANCEL", invite.uri_text)
    h = request.headers
    h.add("Via", invite.headers.get_all("Via")[0])
    for route in invite.headers.lines("Route"):
        h.add("Route", route)
    h.add("Max-Forwards", "70")
    h.add("From", invite.headers.get("From") or "")
    h.add("To", invite.headers.get("To") or "")
    h.add("Call-ID", invite.call_id)
    h.add("CSeq", f"{invite.cseq.seq} CANCEL")
    h.add("Content-Length", "0")
    return request
