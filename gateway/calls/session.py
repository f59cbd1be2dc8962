"""Changes to a connected call's session: refreshes, offers carried across, hold and resume,
and each leg's session timer (RFC 4028).

A re-INVITE or UPDATE that refreshes the session (no offer, or the offer that leg already
made: same o= version, RFC 3264 8) is answered here with what that leg already has from us,
which keeps the call up through Lync's 30-minute refreshes. One that changes it (hold, new
codecs, a new address) is carried to the other leg as a request of ours, whose answer comes
back as ours; one offer at a time (491 otherwise). Where a leg's ICE ends here (a Lync side),
its offers are answered here and only a change of direction, a stream removed, or a stream
added that the side takes up (video added mid-call by either leg, or offered again on the
line it was removed from: prepared, offered to the other leg, then connected, and where we
control ICE the new pair named to Lync) crosses.
The gateway refreshes the legs it is the refresher of, and hangs up both legs when a leg's
session expires.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway import logs
from gateway.calls.actions import ICE_TIMEOUT, AddStreams, StopStreams
from gateway.calls.admission import reason_phrase
from gateway.calls.bodies import origin, sdp_of
from gateway.calls.call import Call, CallState, InDialogRequest, Leg, Purpose
from gateway.calls.context import Context
from gateway.calls.media_side import AddsStreams, FollowsBandwidth, StopsStreams
from gateway.calls.teardown import hang_up
from gateway.sip.errors import SipRequestError
from gateway.sip.message import Request, Response, make_response
from gateway.sip.session_timer import (
    UasTimer,
    answer_as_uas,
    retry_interval,
    uac_headers,
    uac_result,
)
from gateway.sip.transaction_layer import Event, RequestReceived, TransactionLayer
from gateway.sip.transaction_machines import ServerTransaction
from sdp.errors import SdpError
from sdp.hold import Directions, conformed, directions, dropped, restated
from sdp.parse import parse_sdp

if TYPE_CHECKING:
    from gateway.sip.endpoint import Endpoint

log = logs.get(__name__)
# Failures of a request inside a dialog that end the dialog (RFC 3261 14.1, RFC 5057).
DIALOG_GONE = frozenset({408, 481})
SDP = "application/sdp"


def in_dialog(ctx: Context, event: RequestReceived, now: float, core: Endpoint) -> list[Event]:
    """A re-INVITE or UPDATE inside a call, from either leg."""
    request = event.request
    call = ctx.by_dialog.get((request.call_id, request.to.tag or ""))
    if call is None:
        return core.respond(request, event.transaction, make_response(request, 481), now)
    leg = call.caller if request.call_id == call.inbound.call_id else call.callee
    assert leg.dialog is not None
    try:
        leg.dialog.on_request(request)
        if call.pending is not None and request.body:
            # RFC 3261 14.2 / RFC 3311 5.2: one offer at a time; the peer retries later.
            raise SipRequestError(491, "Request Pending")
        session = answer_as_uas(request, call.settings.timers)
    except SipRequestError as exc:
        return core.respond(request, event.transaction, make_response(
            request, exc.status_hint, exc.reason, headers=exc.headers), now)
    if _changes_session(call, leg, request):
        return _carry(ctx, call, leg, event, session, now, core)
    if _adds_streams(call, leg, request):
        call.pending = InDialogRequest(call, call.other(leg), Purpose.ADD,
                                       origin=event.transaction, origin_request=request,
                                       session=session)
        assert isinstance(call.media, AddsStreams)
        ctx.actions.append(AddStreams(call.id, call.media))  # then streams_added
        return []
    change = _new_shape(call, leg, request)
    kbps = _new_video_kbps(call, leg, request)
    if change is not None or kbps is not None:
        # One re-offer to the other leg carries both a hold (or a removal) and a new video
        # bandwidth, when Lync's states both.
        wanted, removed = change or (dict(leg.directions or {}), frozenset())
        return _carry_directions(ctx, call, leg, event, session, wanted, removed, now, core,
                                 kbps=kbps)
    return _answered_here(ctx, call, leg, event.transaction, request, session, now, core)


def _answered_here(ctx: Context, call: Call, leg: Leg, txn: ServerTransaction,
                   request: Request, session: UasTimer | None, now: float,
                   core: Endpoint) -> list[Event]:
    """A refresh, or an offer answered here with what the leg already has from us (fitted
    to it: streams it adds that are not taken up are declined)."""
    body = b"" if request.method == "UPDATE" and not request.body else leg.sdp_to
    if body and request.body and call.media.answers_offers_here:
        body = _fitted(call, leg, request)
    headers = [("Contact", ctx.local.contact(txn.peer.transport, txn.peer.host))]
    headers += session.headers if session is not None else ()
    leg.timer = session.leg(now) if session is not None else None
    ctx.timer_due(call, leg)
    log.info("session_refreshed", call_id=call.inbound.call_id, method=request.method,
             leg=leg.role)
    return core.respond(request, txn, make_response(
        request, 200, headers=headers, body=body, content_type=SDP if body else None), now)


def _adds_streams(call: Call, leg: Leg, request: Request) -> bool:
    """Whether the leg's offer adds streams its media side takes up (video added to an
    audio call, or offered again on the m= line where it was removed, where Lync's ICE
    ends here)."""
    if not request.body or not call.media.answers_offers_here or call.local:
        return False
    if not isinstance(call.media, AddsStreams):
        return False
    try:
        offer = sdp_of(request)
    except SdpError:
        return False
    return call.media.begin_adding(from_caller=leg is call.caller, offer=offer)


def streams_added(ctx: Context, call: Call, connected: bool, error: BaseException | None,
                  now: float, core: Endpoint) -> list[Event]:
    """The added streams prepared (then offered to the other leg) or connected."""
    media = call.media
    assert isinstance(media, AddsStreams)
    if connected:  # (what was not taken, or all on an error, has been let go)
        if error is not None:
            log.warning("session_streams_add_failed", call_id=call.inbound.call_id,
                        error=str(error))
            return []
        # Where we control ICE toward Lync, the new pairs are named to it as after the call's
        # own checks (RFC 5245 9.1.2.2); Lync, where it controls, sends that offer itself.
        offer = call.media.updated_offer() if call.state is CallState.CONNECTED else None
        return [] if offer is None else send_offer(ctx, call, call.callee, offer, now, core)
    pending = call.pending
    if pending is None or pending.purpose is not Purpose.ADD:
        return []  # the call ended meanwhile (abandon_pending answered the offer)
    if error is not None:
        log.warning("session_streams_add_failed", call_id=call.inbound.call_id,
                    error=str(error))
        call.pending = None
        return _declined_added(ctx, pending, now, core)
    pending.sent_body = media.added_offer(pending.leg.sdp_to)
    return _send_change(ctx, call, "INVITE", pending, SDP, now, core)


def _declined_added(ctx: Context, sent: InDialogRequest, now: float,
                    core: Endpoint) -> list[Event]:
    """Added streams that could not be taken up after all: the offering leg's answer is
    ours as before, the added streams rejected."""
    txn, request = sent.origin, sent.origin_request
    assert txn is not None and request is not None
    return _answered_here(ctx, sent.call, sent.call.other(sent.leg), txn, request,
                          sent.session, now, core)


def _fitted(call: Call, leg: Leg, request: Request) -> bytes:
    """Our answer to an offer answered here, fitted to it: a stream it adds (Lync adding
    video to an audio call) or drops is rejected, the rest as the leg already has it."""
    try:
        offer = sdp_of(request)
        fitted = conformed(parse_sdp(leg.sdp_to), offer)
    except SdpError:
        return leg.sdp_to
    if fitted is not None:
        log.info("session_streams_declined", call_id=call.inbound.call_id, leg=leg.role,
                 offered=[f"{m.media}{'' if m.port else ' (dropped)'}" for m in offer.media],
                 answered=[f"{m.media}{'' if m.port else ' (rejected)'}"
                           for m in fitted.media])
        leg.sdp_to = fitted.to_bytes()
    return leg.sdp_to


def _changes_session(call: Call, leg: Leg, request: Request) -> bool:
    """Whether the request's offer changes the session rather than refreshing it."""
    if not request.body or call.media.answers_offers_here:
        return False
    before = leg.sdp_from
    return request.body != before and origin(request.body) != origin(before)


def _carry(ctx: Context, call: Call, leg: Leg, event: RequestReceived, session: UasTimer | None,
           now: float, core: Endpoint) -> list[Event]:
    """The offer goes to the other leg in a request of ours; its answer comes back."""
    request = event.request
    try:
        body = call.media.relay_offer(from_caller=leg is call.caller, body=request.body)
    except SdpError as exc:
        return core.respond(request, event.transaction, make_response(
            request, 488, reason_phrase("Not Acceptable Here", str(exc))), now)
    return _send_change(ctx, call, request.method, InDialogRequest(
        call, call.other(leg), Purpose.RELAY, origin=event.transaction, origin_request=request,
        session=session, sent_body=body), request.headers.get("Content-Type"), now, core)


def _new_shape(call: Call, leg: Leg, request: Request
               ) -> tuple[Directions, frozenset[str]] | None:
    """On a call where `leg`'s ICE ends here, the directions its offer changes to (a hold
    or a resume) and the kinds of stream it removes that were up (video); None when it
    changes neither (a refresh, or the second INVITE with Lync's remote candidates:
    answered here)."""
    if not request.body or not call.media.answers_offers_here or call.local:
        return None  # (a call the node took itself has no other leg to tell)
    try:
        offer = sdp_of(request)
        ours = parse_sdp(leg.sdp_to) if leg.sdp_to else None
    except SdpError:
        return None  # answered here as before, with what the leg already has from us
    removed = dropped(ours, offer) if ours is not None else frozenset()
    # Only the kinds that are up: one the offer adds, or offers again where it was removed,
    # that `_adds_streams` did not take up is declined here.
    up = directions(ours) if ours is not None else None
    wanted = {kind: way for kind, way in directions(offer).items() if up is None or kind in up}
    before = {kind: way for kind, way in (
        leg.directions or dict.fromkeys(wanted, "sendrecv")).items() if kind not in removed}
    return (wanted, removed) if wanted != before or removed else None


def _new_video_kbps(call: Call, leg: Leg, request: Request) -> int | None:
    """On a call whose Lync side follows bandwidth, the b=AS the other leg's video should
    now have, when Lync's re-offer (a refresh, hold or resume in all else) states another
    one than it has
    (Lync asking for less video, or more again within the cap)."""
    if not request.body or call.local or not isinstance(call.media, FollowsBandwidth):
        return None
    try:
        kbps = call.media.sip_video_kbps(from_caller=leg is call.caller,
                                         offer=sdp_of(request))
        theirs = parse_sdp(call.other(leg).sdp_to) if kbps is not None else None
    except SdpError:
        return None
    video = None if theirs is None else next(
        (m for m in theirs.media if m.media == "video" and not m.rejected), None)
    return None if video is None or video.bandwidth("AS") == kbps else kbps


def _carry_directions(ctx: Context, call: Call, leg: Leg, event: RequestReceived,
                      session: UasTimer | None, wanted: Directions, removed: frozenset[str],
                      now: float, core: Endpoint, kbps: int | None = None) -> list[Event]:
    """A hold, resume, stream removed or (`kbps`) video bandwidth changed where a Lync
    side ends here: the other leg gets the description it last had from us with the
    offered directions, those streams rejected and its video's b=AS set; its answer's
    come back the same way."""
    request = event.request
    other = call.other(leg)
    try:
        description = restated(parse_sdp(other.sdp_to), wanted, dropping=removed)
        if kbps is not None:
            for media in description.media:
                if media.media == "video" and not media.rejected:
                    media.set_bandwidth("AS", kbps)
            log.info("video_bandwidth_relayed", call_id=call.inbound.call_id, leg=other.role,
                     kbps=kbps)
        body = description.to_bytes()
    except SdpError as exc:
        return core.respond(request, event.transaction, make_response(
            request, 488, reason_phrase("Not Acceptable Here", str(exc))), now)
    return _send_change(ctx, call, request.method, InDialogRequest(
        call, other, Purpose.DIRECTIONS, origin=event.transaction, origin_request=request,
        session=session, sent_body=body, directions=wanted, dropped=removed), SDP, now, core)


def _send_change(ctx: Context, call: Call, method: str, pending: InDialogRequest,
                 content_type: str | None, now: float, core: Endpoint) -> list[Event]:
    """The request of ours that takes a session change to the other leg."""
    leg = pending.leg
    dialog, peer = leg.dialog, leg.peer
    assert dialog is not None and peer is not None
    headers = [("Contact", ctx.local.contact(peer.transport, peer.host)), ("Supported", "timer")]
    if leg.timer is not None:
        headers += uac_headers(leg.timer.interval, call.settings.timers.min_se,
                               refresher=leg.timer.we_refresh)
    relayed = dialog.create_request(method, ctx.local.via(peer.transport, peer.host),
                                    headers=tuple(headers), body=pending.sent_body,
                                    content_type=content_type)
    call.pending = pending
    log.info("session_change_relayed", call_id=call.inbound.call_id,
             method=method, leg=leg.role, kind=pending.purpose.value)
    return core.send_request(relayed, peer, now, tu_data=pending)[1]


def answered(ctx: Context, sent: InDialogRequest, answer: Response | None, now: float,
             core: Endpoint) -> list[Event]:
    """The answer to a request of ours inside the call (None: it timed out)."""
    call = sent.call
    if answer is not None and answer.status < 200:
        return []
    if call.state is not CallState.CONNECTED:
        return []
    status = 408 if answer is None else answer.status
    dialog, peer = sent.leg.dialog, sent.leg.peer
    assert dialog is not None and peer is not None
    events: list[Event] = []
    if answer is not None and status < 300 and answer.cseq.method == "INVITE":
        ack = dialog.ack(ctx.local.via(peer.transport, peer.host))
        events += TransactionLayer.send_stateless(ack, peer)
    if sent.purpose is Purpose.ADD:
        call.pending = None
        return events + _add_answered(ctx, sent, answer if status < 300 else None, status,
                                      now, core)
    if sent.purpose in (Purpose.RELAY, Purpose.DIRECTIONS):
        call.pending = None
        if answer is None or status >= 300:
            return events + _change_refused(ctx, sent, answer, status, now, core)
        if sent.purpose is Purpose.RELAY:
            return events + _relay_answered(ctx, sent, answer, now, core)
        return events + _directions_answered(ctx, sent, answer, now, core)
    if sent.purpose is Purpose.REFRESH:
        return events + _refresh_answered(ctx, sent, answer, status, now, core)
    if status >= 300:
        # The guide's "Transaction failed UPDATE": media already flows; say so and go on.
        log.warning("updated_offer_refused", call_id=call.inbound.call_id, status=status,
                    reason=answer.reason if answer else "no answer")
    return events


def _relay_answered(ctx: Context, sent: InDialogRequest, answer: Response, now: float,
                    core: Endpoint) -> list[Event]:
    call, answerer = sent.call, sent.leg
    offerer = call.other(answerer)
    request = sent.origin_request
    assert request is not None
    body = call.media.relay_answer(from_caller=answerer is call.caller, body=answer.body)
    if request.body:
        offerer.sdp_from, answerer.sdp_to = request.body, sent.sent_body
    if body:
        answerer.sdp_from, offerer.sdp_to = answer.body, body
    return _answer_change(ctx, sent, answer, body, answer.headers.get("Content-Type"), now,
                          core)


def _directions_answered(ctx: Context, sent: InDialogRequest, answer: Response, now: float,
                         core: Endpoint) -> list[Event]:
    """The other leg's answer to a hold or resume: its directions, restated in what the
    offering leg last had from us, are our answer to it."""
    call, answerer = sent.call, sent.leg
    offerer = call.other(answerer)
    request = sent.origin_request
    assert request is not None
    try:
        answered_directions = directions(parse_sdp(answer.body)) if answer.body else {}
        restated_answer = restated(parse_sdp(offerer.sdp_to), answered_directions,
                                   answering=sdp_of(request))
    except SdpError as exc:
        log.warning("answer_sdp_unreadable", call_id=call.inbound.call_id, error=str(exc))
        return _change_refused(ctx, sent, None, 488, now, core)
    body = restated_answer.to_bytes()
    answerer.sdp_to, offerer.sdp_to = sent.sent_body, body
    offerer.directions = sent.directions
    log.info("session_directions_changed", call_id=call.inbound.call_id,
             offered=sent.directions, answered=answered_directions,
             removed=sorted(sent.dropped))
    if sent.dropped and isinstance(call.media, StopsStreams):
        kinds = ", ".join(sorted(sent.dropped))
        ctx.actions.append(StopStreams(call.media, sent.dropped,
                                       f"{kinds} removed mid-call by the {offerer.role.party}"))
    return _answer_change(ctx, sent, answer, body, SDP, now, core)


def _add_answered(ctx: Context, sent: InDialogRequest, answer: Response | None, status: int,
                  now: float, core: Endpoint) -> list[Event]:
    """The other leg's answer to the added streams: ours to the leg that added them, then
    ICE for them and the relay joined; refused (or unreadable), the offering leg gets
    them declined and the call goes on as it was, unless the other leg is gone."""
    call, answerer = sent.call, sent.leg
    offerer = call.other(answerer)
    request = sent.origin_request
    media = call.media
    assert request is not None and isinstance(media, AddsStreams)
    body, taken = b"", False
    if answer is not None:
        try:
            body, taken = media.added_answer(answer.body, offerer.sdp_to)
        except SdpError as exc:
            log.warning("answer_sdp_unreadable", call_id=call.inbound.call_id, error=str(exc))
    ctx.actions.append(AddStreams(call.id, media, ICE_TIMEOUT))  # connects what was taken
    if not body:
        log.info("session_streams_add_refused", call_id=call.inbound.call_id, status=status,
                 leg=answerer.role)
        events = _declined_added(ctx, sent, now, core)
        if status in DIALOG_GONE:
            events += hang_up(ctx, call, f"session change failed on the {answerer.role} leg:"
                              f" {status}", now, core)
        return events
    assert answer is not None
    offerer.sdp_from, offerer.sdp_to = request.body, body
    answerer.sdp_to, answerer.sdp_from = sent.sent_body, answer.body
    # Where a hold or a removal was crossed before, the kinds taken join the directions
    # each leg stated (else its next refresh would read as a change of them).
    taken_kinds = directions(parse_sdp(body))
    for leg, stated in ((offerer, request.body), (answerer, answer.body)):
        if leg.directions is not None:
            leg.directions = {**{kind: way for kind, way in directions(parse_sdp(stated)).items()
                                 if kind in taken_kinds}, **leg.directions}
    log.info("session_streams_added", call_id=call.inbound.call_id, leg=offerer.role,
             taken=taken)
    return _answer_change(ctx, sent, answer, body, SDP, now, core)


def _change_refused(ctx: Context, sent: InDialogRequest, answer: Response | None, status: int,
                    now: float, core: Endpoint) -> list[Event]:
    """The other leg refused (or never answered) a session change: so does our answer to
    the leg that asked; a leg that is gone takes the call with it."""
    origin_txn, request = sent.origin, sent.origin_request
    assert origin_txn is not None and request is not None
    reason = answer.reason if answer is not None else "Request Timeout"
    events = core.respond(request, origin_txn, make_response(request, status, reason), now)
    if status in DIALOG_GONE:
        events += hang_up(ctx, sent.call, f"session change failed on the {sent.leg.role} leg:"
                          f" {status} {reason}", now, core)
    return events


def _answer_change(ctx: Context, sent: InDialogRequest, answer: Response, body: bytes,
                   content_type: str | None, now: float, core: Endpoint) -> list[Event]:
    """Our 2xx to the leg that asked for a session change, timers of both legs renewed."""
    call, origin_txn, request = sent.call, sent.origin, sent.origin_request
    assert origin_txn is not None and request is not None
    sent.leg.timer = uac_result(answer, now)
    ctx.timer_due(call, sent.leg)
    asker, session = call.other(sent.leg), sent.session
    asker.timer = session.leg(now) if session is not None else None
    ctx.timer_due(call, asker)
    headers = [("Contact", ctx.local.contact(origin_txn.peer.transport, origin_txn.peer.host))]
    headers += session.headers if session is not None else ()
    return core.respond(request, origin_txn, make_response(
        request, 200, headers=headers, body=body,
        content_type=content_type if body else None), now)


def _refresh_answered(ctx: Context, sent: InDialogRequest, answer: Response | None,
                      status: int, now: float, core: Endpoint) -> list[Event]:
    call, leg = sent.call, sent.leg
    if answer is not None and status < 300:
        leg.timer = uac_result(answer, now)
        ctx.timer_due(call, leg)
        return []
    timer = leg.timer
    if answer is not None and status == 422 and timer is not None:
        interval = retry_interval(answer, timer.interval)
        if interval is not None:
            timer.interval = interval
            return send_refresh(ctx, call, leg, now, core)
    reason = answer.reason if answer is not None else "no answer"
    log.warning("session_refresh_failed", call_id=call.inbound.call_id, leg=leg.role,
                status=status, reason=reason)
    if status in DIALOG_GONE:
        return hang_up(ctx, call, f"session refresh failed on the {leg.role} leg: "
                       f"{status} {reason}", now, core)
    return []  # the session stays up until it expires, unless a later refresh works


def timer_due(ctx: Context, call: Call, leg: Leg, now: float, core: Endpoint) -> list[Event]:
    """A leg's session timer came due: refresh it if that is ours to do, else the session
    has expired and the call ends."""
    timer = leg.timer
    assert timer is not None
    if timer.we_refresh and not timer.pending:
        return send_refresh(ctx, call, leg, now, core)
    return hang_up(ctx, call, f"session expired: no refresh from the {leg.role.party} in "
                   f"{timer.interval} s", now, core)


def send_refresh(ctx: Context, call: Call, leg: Leg, now: float, core: Endpoint) -> list[Event]:
    """RFC 4028 7.4: UPDATE where the peer allows it (no offer needed), else a re-INVITE
    with the session description that leg already has from us."""
    dialog, peer, timer = leg.dialog, leg.peer, leg.timer
    assert dialog is not None and peer is not None and timer is not None
    method = "UPDATE" if leg.allows_update else "INVITE"
    body = b"" if method == "UPDATE" else leg.sdp_to
    headers = (("Contact", ctx.local.contact(peer.transport, peer.host)), ("Supported", "timer"),
               *uac_headers(timer.interval, call.settings.timers.min_se, refresher=True))
    refresh = dialog.create_request(method, ctx.local.via(peer.transport, peer.host),
                                    headers=headers, body=body,
                                    content_type=SDP if body else None)
    timer.pending = True
    ctx.timer_due(call, leg)  # now due at expiry, should the refresh go unanswered
    log.info("session_refresh_sent", call_id=call.inbound.call_id, leg=leg.role, method=method)
    return core.send_request(refresh, peer, now,
                             tu_data=InDialogRequest(call, leg, Purpose.REFRESH))[1]


def send_offer(ctx: Context, call: Call, leg: Leg, body: bytes, now: float,
               core: Endpoint) -> list[Event]:
    """A new offer of ours on `leg` (the second INVITE toward Lync, with
    a=remote-candidates: RFC 5245 9.1.2.2)."""
    dialog, peer = leg.dialog, leg.peer
    if dialog is None or peer is None:
        return []
    reinvite = dialog.create_request(
        "INVITE", ctx.local.via(peer.transport, peer.host),
        headers=(("Contact", ctx.local.contact(peer.transport, peer.host)),), body=body,
        content_type=SDP)
    leg.sdp_to = body
    return core.send_request(reinvite, peer, now,
                             tu_data=InDialogRequest(call, leg, Purpose.REMOTE_CANDIDATES))[1]
