"""The back-to-back user agent: the `CallHandler` that turns a routed INVITE into a call of
two legs, and hands each event to the part of call control that owns it.

- admission (`admission`): overload limits and the routing decision;
- media (`anchoring`, `media_side`): which side anchors the call's media;
- placement (`placement`): the callee leg's targets, failover, retries, answers;
- session changes (`session`): refreshes, offers carried across, hold, session timers;
- teardown (`teardown`): BYE, CANCEL, the gateway's own hang-ups, ended calls;
- time (`deadlines`): every timer of every call on one heap.

Sans-I/O: what needs waiting for or doing outside (DNS, ICE, media sockets) comes out of
`take_actions()`, and the adapter (`gateway.daemon.call_io`) feeds the outcome back in
through `prepared` and `media_connected`. A Lync meeting joined by Conference ID
(`meeting`) has its focus, lobby and MCU before and around the callee leg.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway import logs
from gateway.calls import local as answered_here
from gateway.calls import meeting, placement, reception, reception_leg, session, teardown
from gateway.calls.actions import Action, Prepare
from gateway.calls.admission import Admission, reason_phrase
from gateway.calls.anchoring import media_for
from gateway.calls.call import Call, InDialogRequest, Leg, Outbound, Purpose, Role
from gateway.calls.cdr import CallRecord, CdrStore
from gateway.calls.context import TIMER_ROLE, Context
from gateway.calls.deadlines import Due
from gateway.calls.echo_side import echo_for
from gateway.calls.media_side import MediaSide
from gateway.calls.reception import Reception
from gateway.calls.reception_media import reception_for
from gateway.calls.registrar import Registrar, aor_of
from gateway.calls.settings import CallSettings, Local
from gateway.calls.stats import Statistics
from gateway.media.dtmf import info_digit
from gateway.presence.handler import NotifySent, Presence
from gateway.resolver.rfc3263 import Target, TargetResolver
from gateway.sip.dialog import Dialog
from gateway.sip.errors import SipError, SipRequestError
from gateway.sip.message import Request, make_response
from gateway.sip.session_timer import answer_as_uas
from gateway.sip.transaction_layer import (
    AckReceived,
    CancelReceived,
    Event,
    RequestReceived,
    ResponseReceived,
    TransactionTimeout,
)
from gateway.sip.transaction_machines import ServerTransaction
from ice.ports import PortAllocator
from routing.alias import parse_alias
from routing.engine import Decision
from sdp.errors import SdpError

if TYPE_CHECKING:
    from gateway.sip.endpoint import Endpoint

log = logs.get(__name__)


class B2bua:
    """The CallHandler for INVITE, BYE and UPDATE (and REGISTER with a registrar)."""

    def __init__(self, settings: CallSettings, *, local: Local, resolver: TargetResolver,
                 cdrs: CdrStore | None = None, media_ports: PortAllocator | None = None,
                 registrar: Registrar | None = None,
                 wall_clock: Callable[[], float] = time.time,
                 presence: Presence | None = None) -> None:
        self.admission = Admission(settings)
        self.ctx = Context(local, cdrs, wall_clock, resolver, registrar=registrar,
                           ports=media_ports)
        self._ids = itertools.count(1)
        # INFO (keypad digits) and NOTIFY (how a REFER went) inside calls the node took.
        methods = {"INVITE", "BYE", "UPDATE", "INFO", "NOTIFY"}
        if registrar is not None:
            methods.add("REGISTER")
        self.presence = presence  # SUBSCRIBE and our NOTIFYs' answers go to it
        if presence is not None:
            methods |= presence.methods
        self.methods = frozenset(methods)

    # -- configuration and what others read ------------------------------------------------
    @property
    def settings(self) -> CallSettings:
        return self.admission.settings

    def configure(self, settings: CallSettings) -> None:
        """A new config generation: new calls are admitted under it; calls in progress keep
        the settings they were admitted under."""
        self.admission.settings = settings

    @property
    def calls(self) -> dict[int, Call]:
        return self.ctx.calls

    def take_actions(self) -> list[Action]:
        """What the adapter must do now, in order (see `gateway.calls.actions`)."""
        actions = self.ctx.actions
        if actions:
            self.ctx.actions = []
        return actions

    def statistics(self) -> Statistics:
        calls = self.ctx.calls.values()
        return self.ctx.stats.snapshot(len(calls), (c.media.relayed for c in calls
                                                    if c.media.relayed is not None))

    def active(self) -> list[dict[str, object]]:
        """The calls in progress, for the status API."""
        return [{
            "id": call.id, "state": call.state.value, "in_call_id": call.inbound.call_id,
            "out_call_id": call.out.invite.call_id if call.out.invite else None,
            "caller": str(call.inbound.from_.uri), "alias": call.inbound.uri_text,
            "target": call.target_uri, "decision": call.decision.to_json(),
            "started": call.record.started,
            "media": call.media.relayed.counters() if call.media.relayed is not None else None,
        } for call in self.ctx.calls.values()]

    # -- events from the core ----------------------------------------------------------------
    def on_event(self, event: Event, now: float, core: Endpoint) -> list[Event]:
        ctx = self.ctx
        if isinstance(event, RequestReceived):
            request = event.request
            method, tagged = request.method, request.to.tag is not None
            if method == "INVITE" and not tagged:
                return self._new_invite(event, now, core)
            if method == "BYE":
                joined = ctx.by_dialog.get((request.call_id, request.to.tag or ""))
                if joined is not None and joined.meeting is not None and (
                        joined.meeting.owns(request.call_id)):
                    return meeting.focus_bye(ctx, joined, event, now, core)
                return teardown.bye(ctx, event, now, core)
            if method in ("INVITE", "UPDATE") and tagged:
                return session.in_dialog(ctx, event, now, core)
            if method == "UPDATE":  # RFC 3311: only inside a (possibly early) dialog
                return core.respond(request, event.transaction,
                                    make_response(request, 481, to_tag=core.new_tag()), now)
            if method == "REGISTER" and ctx.registrar is not None:
                return ctx.registrar.register(request, event.transaction,
                                              event.transaction.peer, now, core)
            if method == "SUBSCRIBE" and self.presence is not None:
                return self.presence.on_subscribe(event, now, core)
            if method in ("INFO", "NOTIFY") and tagged:
                return self._in_local_call(event, now, core)
            return self.admission.on_event(event, now, core)
        if isinstance(event, ResponseReceived | TransactionTimeout):
            mark = event.transaction.tu_data
            answer = event.response if isinstance(event, ResponseReceived) else None
            if isinstance(mark, NotifySent) and self.presence is not None:
                self.presence.answered(mark, answer.status if answer else None, now)
                return []
            if isinstance(mark, meeting.Asked):
                return meeting.answered(ctx, mark, answer, now, core)
            if isinstance(mark, InDialogRequest) and mark.purpose is Purpose.REFER:
                return reception.referred(ctx, mark, answer, now, core)
            if isinstance(mark, InDialogRequest) and mark.purpose is Purpose.HAND_ON:
                return reception_leg.moved(ctx, mark, answer, now, core)
            if isinstance(mark, InDialogRequest):
                return session.answered(ctx, mark, answer, now, core)
            if isinstance(mark, Call) and event.transaction is mark.out.txn:
                if answer is not None:
                    return placement.response(ctx, mark, answer, now, core)
                assert isinstance(event, TransactionTimeout)
                why = "unreachable" if event.timer == "transport" else "timeout"
                return placement.next_target(ctx, mark, now, core, why)
            return []
        if isinstance(event, CancelReceived):
            return teardown.cancel(ctx, event, now, core)
        if isinstance(event, AckReceived):
            return []  # the ACK for our 2xx: the callee leg was ACKed when it answered
        return []

    def _new_invite(self, event: RequestReceived, now: float, core: Endpoint) -> list[Event]:
        ctx, request, txn = self.ctx, event.request, event.transaction
        settings = self.admission.settings
        overload = self.admission.overloaded(now, len(ctx.calls))
        if overload is not None:
            log.warning("call_refused", call_id=request.call_id, reason=overload)
            return core.respond(request, txn, make_response(
                request, 503, reason_phrase("Service Unavailable", overload),
                to_tag=core.new_tag(),
                headers=(("Retry-After", str(settings.limits.retry_after)),)), now)
        try:
            in_session = answer_as_uas(request, settings.timers)
        except SipRequestError as exc:  # 422: the caller's interval is below our Min-SE
            return core.respond(request, txn, make_response(
                request, exc.status_hint, exc.reason, to_tag=core.new_tag(),
                headers=exc.headers), now)
        decision = self.admission.decide(request, registered=self._registered(request))
        record = self._record(request, decision)
        if not decision.routed:
            record.ended, record.end_cause = record.started, f"404 {decision.reason}"
            ctx.stats.ended("rejected", "reject")
            ctx.record(record)
            return self.admission.answer_decision(event, decision, now, core)
        service = decision.service
        if service is not None and service.pin and decision.pin is not None:
            refused = self._wrong_pin(decision, txn.peer.host, now, settings)
            if refused:
                return self._refuse(record, request, txn, 403, refused, now, core)
        # PIN-protected and dialled without it: the node asks for it itself.
        asks_pin = service is not None and bool(service.pin) and decision.pin is None
        local = service is not None and (service.answered_here or asks_pin)
        joins = decision.rule is not None and decision.rule.target == "lync_meeting_direct"
        target = "" if local or joins else placement.target_uri(decision)
        if target is None:
            why = (f"{decision.reason}; {decision.destination} is not a SIP address and the "
                   "rule names no server")
            return self._refuse(record, request, txn, 404, reason_phrase("Not Found", why),
                                now, core, tally="failed")
        tag = core.new_tag()
        try:
            # A request that cannot set up a dialog is refused before anything is placed.
            caller_dialog = Dialog.from_request(request, tag, confirmed=False)
            seen = ctx.local.address_for(txn.peer.host)
            media: MediaSide
            prompter: Reception | None = None
            if service is not None and (asks_pin or service.type == "virtual_reception"):
                side = reception_for(request, settings, ctx.ports, ctx.local.address, seen,
                                     service.theme)
                media, prompter = side, Reception(
                    side, "pin" if asks_pin else "number", pin_for=decision if asks_pin
                    else None, target=parse_alias(request.uri_text) if asks_pin else "")
            elif local:
                media = echo_for(request, ctx.ports, ctx.local.address,
                                 settings.media_timeout, seen)
            else:
                media = media_for(request, decision, settings, ctx.ports, ctx.local.address,
                                  seen)
        except SipError as exc:
            return self._refuse(record, request, txn, exc.status_hint, exc.reason, now, core,
                                headers=exc.headers if isinstance(exc, SipRequestError) else ())
        except SdpError as exc:
            return self._refuse(record, request, txn, 488,
                                reason_phrase("Not Acceptable Here", str(exc)), now, core)
        sdp = request.content_type is not None and request.content_type.type == (
            "application/sdp")
        call = Call(next(self._ids), request, txn, tag, decision, settings, target, media,
                    caller=Leg(Role.CALLER, peer=txn.peer, dialog=caller_dialog,
                               sdp_from=request.body if sdp else b""),
                    callee=Leg(Role.CALLEE), record=record, in_session=in_session,
                    out=Outbound(interval=settings.timers.interval), local=local,
                    reception=prompter)
        ctx.calls[call.id] = call
        ctx.record(record, "open")
        txn.tu_data = call
        ctx.push(now + placement.LOCAL_RINGING_AFTER, call, Due.RINGING)
        ctx.push(now + placement.SETUP_LIMIT, call, Due.SETUP)
        return self._set_up(call, now, core)

    def _refuse(self, record: CallRecord, request: Request, txn: ServerTransaction, status: int,
                reason: str, now: float, core: Endpoint, tally: str = "",
                headers: tuple[tuple[str, str], ...] = ()) -> list[Event]:
        """A routed call refused before it became one: its CDR closed, the caller told."""
        record.ended, record.end_cause = record.started, f"{status} {reason}"
        if tally:
            self.ctx.stats.ended(tally, record.outcome)
        self.ctx.record(record)
        return core.respond(request, txn, make_response(request, status, reason,
                                                        to_tag=core.new_tag(), headers=headers),
                            now)

    def _wrong_pin(self, decision: Decision, source: str, now: float,
                   settings: CallSettings) -> str:
        """Why a PIN dialled with the alias (`alias*PIN`) is refused, or '' when it is
        right; a wrong one counts against the caller's address (`pin_guard`)."""
        service = decision.service
        assert service is not None
        guard = self.ctx.pin_guard
        locked = guard.locked_for(source, now)
        if locked is not None:
            log.warning("pin_locked_out", source=source, service=service.name,
                        seconds_left=round(locked))
            return (f"Forbidden (too many wrong PINs from {source}: try again in "
                    f"{locked:.0f} s)")
        if decision.pin in (service.pin, service.guest_pin):
            return ""
        now_locked = guard.failed(source, now, settings.pins)
        log.warning("pin_refused", source=source, service=service.name, locked_out=now_locked)
        return "Forbidden (wrong PIN)"

    def _in_local_call(self, event: RequestReceived, now: float, core: Endpoint
                       ) -> list[Event]:
        """INFO or NOTIFY inside a call: the reception's keypad and REFER reports."""
        request = event.request
        call = self.ctx.by_dialog.get((request.call_id, request.to.tag or ""))
        if call is not None and call.meeting is not None and (
                call.meeting.owns(request.call_id)):  # the focus's, not the caller's
            if request.method == "NOTIFY":
                return meeting.notify(self.ctx, call, event, now, core)
            return meeting.info(self.ctx, call, event, now, core)
        if call is None or (call.reception is None and request.method == "NOTIFY"):
            return core.respond(request, event.transaction, make_response(request, 481), now)
        if call.reception is None:  # RFC 6086 legacy INFO: nothing here takes its body
            return core.respond(request, event.transaction, make_response(
                request, 415, "Unsupported Media Type (INFO is not carried across calls)"),
                now)
        if request.method == "NOTIFY":
            return reception.notify(self.ctx, call, event, now, core)
        content_type = request.content_type
        key = info_digit(content_type.type if content_type else "", request.body)
        return reception.info(self.ctx, call, event, key, now, core)

    # -- what the reception's media feeds back -----------------------------------------
    def played(self, call_id: int, now: float, core: Endpoint) -> list[Event]:
        call = self.ctx.calls.get(call_id)
        if call is None or not call.connected:
            return []
        if call.reception is None:  # a meeting's lobby, dialled directly
            return meeting.played(self.ctx, call, now, core) if call.meeting else []
        return reception.played(self.ctx, call, now, core)

    def digit(self, call_id: int, key: str, now: float, core: Endpoint) -> list[Event]:
        call = self.ctx.calls.get(call_id)
        if call is None or call.reception is None:
            return []
        return reception.digit(self.ctx, call, key, now, core)

    def _registered(self, request: Request) -> bool:
        registrar = self.ctx.registrar
        if registrar is None:
            return False
        aor = aor_of(request.from_.uri)
        return bool(aor and registrar.bindings(aor))

    def _record(self, request: Request, decision: Decision) -> CallRecord:
        return CallRecord(
            in_call_id=request.call_id, caller=str(request.from_.uri), alias=request.uri_text,
            outcome=decision.outcome, started=self.ctx.wall_clock(),
            service=decision.service.name if decision.service else None,
            rule=decision.rule.name if decision.rule else None,
            destination=decision.destination,
        )

    def _set_up(self, call: Call, now: float, core: Endpoint) -> list[Event]:
        if call.local:
            self.ctx.actions.append(Prepare(call.id, call.media))  # its ports, then answer
            return []
        if meeting.is_meeting(call):
            return meeting.set_up(self.ctx, call, now, core)
        return placement.set_up(self.ctx, call, now, core)

    # -- outcomes the adapter feeds back ---------------------------------------------------
    def prepared(self, call_id: int, targets: list[Target] | None,
                 error: BaseException | None, now: float, core: Endpoint) -> list[Event]:
        call = self.ctx.calls.get(call_id)
        if call is None:
            return []  # ended meanwhile: its media was closed with it
        if call.meeting is not None:  # (at a reception too: a Conference ID's look-up)
            return meeting.prepared(self.ctx, call, targets, error, now, core)
        if call.local and not call.handing_on and error is None:
            return answered_here.answer(self.ctx, call, now, core)
        return placement.prepared(self.ctx, call, targets, error, now, core)

    def media_connected(self, call_id: int, error: BaseException | None, now: float,
                        core: Endpoint) -> list[Event]:
        return placement.media_connected(self.ctx, self.ctx.calls.get(call_id), error, now,
                                         core)

    def streams_added(self, call_id: int, connected: bool, error: BaseException | None,
                      now: float, core: Endpoint) -> list[Event]:
        call = self.ctx.calls.get(call_id)
        if call is None:
            return []  # ended meanwhile: its media was closed with it
        return session.streams_added(self.ctx, call, connected, error, now, core)

    # -- time --------------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        mine = self.ctx.deadlines.next()
        theirs = self.presence.next_deadline() if self.presence is not None else None
        return mine if theirs is None or (mine is not None and mine < theirs) else theirs

    def handle_timeout(self, now: float, core: Endpoint) -> list[Event]:
        ctx = self.ctx
        events: list[Event] = []
        for _, _, call_id, due in ctx.deadlines.due(now):
            call = ctx.calls[call_id]
            if due is Due.RINGING:
                events += placement.ring_locally(ctx, call, now, core)
            elif due is Due.MEDIA:
                events += self._media_check(call, now, core)
            elif due is Due.SETUP:
                events += placement.set_up_too_long(ctx, call, now, core)
            elif due is Due.HANG_UP:
                events += answered_here.over(ctx, call, now, core)
            elif due is Due.ENTRY:
                events += reception.entry_timed_out(ctx, call, now, core)
            elif due is Due.LEG and call.reception is None:
                events += meeting.leg_timed_out(ctx, call, now, core)
            elif due is Due.LEG:
                events += reception.leg_timed_out(ctx, call, now, core)
            elif due is Due.LOBBY:
                events += meeting.lobby_timed_out(ctx, call, now, core)
            elif due is Due.LOBBY_PROMPT:
                events += meeting.prompt_again(ctx, call)
            elif due is Due.SUBSCRIPTION:
                events += meeting.resubscribe(ctx, call, now, core)
            else:
                events += session.timer_due(ctx, call, call.leg(TIMER_ROLE[due]), now, core)
        if self.presence is not None:
            events += self.presence.handle_timeout(now, core)
        return events

    def _media_check(self, call: Call, now: float, core: Endpoint) -> list[Event]:
        relayed = call.media.relayed
        reason = relayed.expired(now) if relayed is not None else None
        if reason is None:
            self.ctx.media_due(call, now)
            return []
        log.warning("media_timeout", call_id=call.inbound.call_id, reason=reason)
        return teardown.hang_up(self.ctx, call, reason, now, core)
