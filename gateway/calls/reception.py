"""The Virtual Reception (the guide's IVR gateway) and the PIN prompt of a PIN-protected
service dialled without its PIN: the node answers, prompts, collects digits (RFC 4733 from
the media, SIP INFO from signalling), `#` ending an entry, and routes what was entered like
a dialled alias (services first, then rules). A silent entry is prompted again; three
failures end the call with a goodbye.

A caller whose INVITE's Allow lists REFER (and a Lync caller) is handed on by REFER (RFC
3515) to `<entered alias>@<this node>`, or `<alias>*<PIN>@<this node>` for a PIN-protected
service: its new INVITE is routed and placed like any call, so a caller reaching a room
through the reception gets exactly what dialling the room gets (media, encryption,
bandwidth, video, CDR), and the node is out of the path once the caller has moved on (the
NOTIFY with the new call's final status ends the old one). A caller that does not list
REFER (SIP), refuses ours, or reports that the call it placed failed, is handed on by a
leg of the node's own (`reception_leg`): its leg stays, and its media moves onto the relay
toward the callee once that answers; a leg that does not answer within
`placement.SETUP_LIMIT` is cancelled, as a failed one is.

What an entry routes to is `routed`. At a reception with a `lync_server` an entry is a
Lync meeting's Conference ID: looked up on that server (`meeting.look_up`), the focus URI
it names routed as the guide's rule 60 routes it (a `lync_via_virtual_reception` rule
matching the full URI), and the caller handed on by a leg of ours whose callee is the
meeting (`meeting`: focus, lobby, A/V MCU); never by REFER, as the caller could not dial
the meeting itself. An unknown ID, or a join that fails before the caller is in, brings
it back to the prompts ("that meeting was not found"), one failure more.

Wrong PINs count against the caller's source address (`pin_guard`); the digits of a PIN are
never logged nor written in a CDR.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from gateway import logs
from gateway.calls import meeting, reception_leg
from gateway.calls.actions import Play, Silence
from gateway.calls.call import Call, CallState, InDialogRequest, Purpose
from gateway.calls.context import Context
from gateway.calls.deadlines import Due
from gateway.calls.placement import SETUP_LIMIT
from gateway.calls.protocol import arriving_protocol
from gateway.calls.teardown import hang_up, leave_meeting, send_cancel
from gateway.conferencing import c3p
from gateway.sip.errors import SipError
from gateway.sip.message import Request, Response, make_response
from gateway.sip.transaction_layer import Event, RequestReceived
from routing.engine import CallContext, Decision
from sdp.errors import SdpError

if TYPE_CHECKING:
    from gateway.sip.endpoint import Endpoint

log = logs.get(__name__)
MAX_DIGITS = 32  # an entry longer than any alias or PIN is a mistake (or a flood)
ENTRY_TIMEOUT = 10.0  # seconds to start, or go on, typing after a prompt
MAX_FAILURES = 3


@dataclass(eq=False, slots=True)
class Reception:
    media: reception_leg.Receiving
    asking: Literal["number", "pin"]
    pin_for: Decision | None = None  # the PIN-protected service the PIN is asked for
    target: str = ""  # the (parsed) alias the PIN is for
    digits: str = ""
    failures: int = 0
    typing: bool = False  # the caller has started an entry: the prompt was cut off
    entry_until: float | None = None  # the entry's deadline on the heap
    referring: str = ""  # the alias the caller is being handed on to
    pin: str = ""  # the PIN that goes with it (in the Refer-To only)
    routes_to: Decision | None = None  # ... and where it routes (for a leg of our own)
    lobby: Decision | None = None  # the reception's own decision, while that leg is placed
    leg_until: float | None = None  # that leg's deadline to answer, on the heap
    leaving: str = ""  # why the call ends once the goodbye prompt is over
    outcome: str = ""  # for the CDR: what the entries came to (never the PIN)

    def prompts(self) -> tuple[str, ...]:
        return ("enter_number",) if self.asking == "number" else ("enter_pin",)

    # What placement reports of the leg placed for the caller (`reception_leg`): methods,
    # so that placement needs nothing of the reception's.
    def joined(self, ctx: Context, call: Call, body: bytes, now: float,
               core: Endpoint) -> list[Event]:
        self.outcome = f"handed on to {self.referring} by a leg of ours"
        return reception_leg.joined(ctx, call, body, now, core)

    def leg_failed(self, ctx: Context, call: Call, why: str, now: float,
                   core: Endpoint) -> list[Event]:
        return _leg_failed(ctx, call, why, now, core)

    # What `meeting` reports of a Conference ID entered here.
    def meeting_found(self, ctx: Context, call: Call, focus: str, now: float,
                      core: Endpoint) -> list[Event]:
        """The look-up found the meeting's `focus`: routed (the guide's full-URI rule to
        Lync), and the caller handed on to it."""
        decision = routed(call, focus)
        rule = decision.rule
        if rule is None or rule.target != "lync_via_virtual_reception":
            return self.meeting_failed(ctx, call, 404, f"Not Found (the meeting's focus URI "
                                       f"routes to no lync_via_virtual_reception rule: "
                                       f"{decision.reason})", now, core)
        assert call.meeting is not None
        return _hand_on(ctx, call, f"meeting {call.meeting.conference_id}", decision)

    def meeting_failed(self, ctx: Context, call: Call, status: int, reason: str,
                       now: float, core: Endpoint) -> list[Event]:
        """The meeting was not found, or its join failed before the caller was in."""
        if call.handing_on:
            return _leg_failed(ctx, call, f"{status} {reason}", now, core)
        events = leave_meeting(ctx, call, now, core)
        call.meeting = None
        log.info("reception_meeting_not_found", call_id=call.inbound.call_id,
                 status=status, reason=reason)
        return events + _failed(ctx, call, f"meeting: {status} {reason}",
                                ("meeting_not_found", "enter_number"))


def start(ctx: Context, call: Call) -> list[Event]:
    """The call is answered: the first prompt, and the caller's keypad is listened to."""
    r = _reception(call)
    first = ("welcome", "enter_number") if r.asking == "number" else ("enter_pin",)
    ctx.actions.append(Play(call.id, r.media, first, listen=True))
    return []


def played(ctx: Context, call: Call, now: float, core: Endpoint) -> list[Event]:
    """A prompt is over: the caller's turn (or the call's end, or the REFER)."""
    r = _reception(call)
    if r.leaving:
        return hang_up(ctx, call, r.leaving, now, core)
    if r.referring:
        if call.meeting is not None:
            return _own_leg(ctx, call, "a meeting is joined by a leg of ours", now, core)
        if _takes_refer(call):
            return _refer(ctx, call, now, core)
        return _own_leg(ctx, call, "its INVITE does not allow REFER", now, core)
    if not r.typing and call.meeting is None:
        _wait(ctx, call, now)
    return []


def digit(ctx: Context, call: Call, key: str, now: float, core: Endpoint) -> list[Event]:
    r = _reception(call)
    if (r.leaving or r.referring or call.meeting is not None
            or call.state is not CallState.CONNECTED):
        return []  # (a Conference ID entered is being looked up)
    if not r.typing:
        r.typing = True
        ctx.actions.append(Silence(r.media))
    if key == "#":
        return _finish(ctx, call, now, core)
    r.digits += key
    if len(r.digits) > MAX_DIGITS:
        return _failed(ctx, call, "entry too long")
    _wait(ctx, call, now)
    return []


def entry_timed_out(ctx: Context, call: Call, now: float, core: Endpoint) -> list[Event]:
    r = _reception(call)
    r.entry_until = None
    if r.digits:
        return _finish(ctx, call, now, core)
    return _failed(ctx, call, "nothing entered")


def info(ctx: Context, call: Call, event: RequestReceived, key: str | None, now: float,
         core: Endpoint) -> list[Event]:
    """A SIP INFO in the call: 200, and its digit (if it carries one) as if keyed."""
    events = core.respond(event.request, event.transaction,
                          make_response(event.request, 200), now)
    if key is None or call.reception is None:
        return events
    return events + digit(ctx, call, key, now, core)


def notify(ctx: Context, call: Call, event: RequestReceived, now: float,
           core: Endpoint) -> list[Event]:
    """The caller reports on the call it placed for our REFER (RFC 3515 2.4.5): once that
    call has its final answer, the reception's call is over."""
    request = event.request
    events = core.respond(request, event.transaction, make_response(request, 200), now)
    r = call.reception
    status = _sipfrag_status(request)
    if r is None or not r.referring or call.handing_on or status is None or status < 200:
        return events
    if status >= 300:
        return events + _own_leg(ctx, call, f"its call for our REFER failed: {status}", now,
                                 core)
    r.outcome = f"handed on to {r.referring}: {status}"
    return events + hang_up(ctx, call, f"reception: {r.outcome}", now, core)


def referred(ctx: Context, sent: InDialogRequest, answer: Response | None, now: float,
             core: Endpoint) -> list[Event]:
    """The caller's answer to our REFER: accepted, the NOTIFYs follow; refused, a leg of
    our own."""
    call = sent.call
    r = call.reception
    if r is None or (answer is not None and answer.status < 300) or not call.connected:
        return []
    why = f"{answer.status} {answer.reason}" if answer is not None else "no answer"
    return _own_leg(ctx, call, f"REFER: {why}", now, core)


def _finish(ctx: Context, call: Call, now: float, core: Endpoint) -> list[Event]:
    r = _reception(call)
    entry, r.digits, r.typing, r.entry_until = r.digits, "", False, None
    if r.asking == "number":
        return _number(ctx, call, entry, now, core)
    return _pin(ctx, call, entry, now)


def routed(call: Call, entry: str) -> Decision:
    """Where the number entered goes: routed like a dialled alias (services first, then
    rules), in the context the caller arrived in."""
    settings = call.settings
    return settings.router.decide(entry, CallContext(
        protocol=arriving_protocol(call.inbound), location=settings.location,
        registered=False))


def _number(ctx: Context, call: Call, entry: str, now: float,
            core: Endpoint) -> list[Event]:
    r = _reception(call)
    if not entry:
        return _failed(ctx, call, "nothing entered")
    here = call.decision.service
    if here is not None and here.lync_server:
        if not c3p.is_conference_id(entry):
            return _failed(ctx, call, "not a Conference ID", ("meeting_not_found",
                                                              "enter_number"))
        return meeting.look_up(ctx, call, entry, here.lync_server, now, core)
    decision = routed(call, entry)
    service = decision.service
    if not decision.routed or (service is not None and service.type == "virtual_reception"):
        log.info("reception_not_found", call_id=call.inbound.call_id, reason=decision.reason)
        return _failed(ctx, call, "number not found", ("not_found", "enter_number"))
    if service is not None and service.pin and decision.pin is None:
        r.asking, r.pin_for, r.target = "pin", decision, entry
        ctx.actions.append(Play(call.id, r.media, ("enter_pin",)))
        return []
    return _hand_on(ctx, call, entry, decision)


def _pin(ctx: Context, call: Call, entry: str, now: float) -> list[Event]:
    r = _reception(call)
    assert r.pin_for is not None and r.pin_for.service is not None
    service = r.pin_for.service
    source = call.in_txn.peer.host
    guard = ctx.pin_guard
    if guard.locked_for(source, now) is None and entry and entry in (
            service.pin, service.guest_pin):
        return _hand_on(ctx, call, r.target, r.pin_for, pin=entry)
    locked = guard.locked_for(source, now) is not None or guard.failed(
        source, now, call.settings.pins)
    log.warning("pin_refused", call_id=call.inbound.call_id, source=source,
                service=service.name, locked_out=locked)
    if locked:
        r.outcome = f"wrong PINs for {service.name!r}: {source} locked out"
        return _leave(ctx, call, f"reception: {r.outcome}", ("wrong_pin", "goodbye"))
    return _failed(ctx, call, f"wrong PIN for {service.name!r}", ("wrong_pin", "enter_pin"))


def _hand_on(ctx: Context, call: Call, alias: str, decision: Decision,
             pin: str = "") -> list[Event]:
    r = _reception(call)
    r.referring, r.pin, r.routes_to = alias, pin, decision
    ctx.actions.append(Play(call.id, r.media, ("connecting",)))
    return []


def _refer(ctx: Context, call: Call, now: float, core: Endpoint) -> list[Event]:
    r = _reception(call)
    leg = call.caller
    dialog, peer = leg.dialog, leg.peer
    assert dialog is not None and peer is not None
    # An alias in a domain goes there (the domain of a deployment's rooms leads to its
    # nodes); a bare one (a number) to this node. A PIN goes as the guide's alias*PIN form.
    here = ctx.local.address_for(peer.host)
    user, _, domain = r.referring.partition("@")
    pin = f"*{r.pin}" if r.pin else ""
    refer = dialog.create_request("REFER", ctx.local.via(peer.transport, peer.host), headers=(
        ("Contact", ctx.local.contact(peer.transport, peer.host)),
        ("Refer-To", f"<sip:{user}{pin}@{domain or here}>"),
        ("Referred-By", f"<sip:reception@{here}>")))
    log.info("reception_handing_on", call_id=call.inbound.call_id, to=r.referring)
    return core.send_request(refer, peer, now,
                             tu_data=InDialogRequest(call, leg, Purpose.REFER))[1]


def _takes_refer(call: Call) -> bool:
    """Whether the caller is handed on by REFER: one whose INVITE allows it, and a Lync
    caller (its own new call gets the whole Lync-to-SIP path, video included, where a leg
    of ours carries on the reception's audio stream alone)."""
    return "refer" in call.inbound.tokens("allow") or reception_leg.is_lync(call)


def _own_leg(ctx: Context, call: Call, why: str, now: float, core: Endpoint) -> list[Event]:
    """The caller does not take REFER (`why`): the node places the leg itself."""
    r = _reception(call)
    assert r.routes_to is not None
    log.info("reception_own_leg", call_id=call.inbound.call_id, to=r.referring, why=why)
    r.lobby = call.decision
    r.leg_until = now + SETUP_LIMIT  # the caller's own set-up limit is long past
    ctx.push(r.leg_until, call, Due.LEG)
    try:
        return reception_leg.begin(ctx, call, r.routes_to, r.media, now, core)
    except (SipError, SdpError) as exc:
        r.referring = ""
        r.outcome = f"the caller could not be handed on ({why}; {exc})"
        return _leave(ctx, call, f"reception: {r.outcome}")


def leg_timed_out(ctx: Context, call: Call, now: float, core: Endpoint) -> list[Event]:
    """The leg placed for the caller has not answered within SETUP_LIMIT: it is cancelled
    and the caller is back at the prompts, as for a leg that failed. One whose INVITE never
    went out has met a bug (its look-up and ports are bounded far below): the call ends as
    an internal error, counted, with whatever it held freed."""
    r = _reception(call)
    r.leg_until = None
    if call.out.invite is None:
        ctx.stats.stuck += 1
        log.error("reception_leg_stuck", call_id=call.inbound.call_id, after=SETUP_LIMIT)
        return hang_up(ctx, call, f"internal error: the leg's set-up did not finish in "
                       f"{SETUP_LIMIT:g} s", now, core)
    events = send_cancel(call, now, core) if call.out.heard else []
    return events + _leg_failed(ctx, call, f"no answer in {SETUP_LIMIT:g} s", now, core)


def _leg_failed(ctx: Context, call: Call, why: str, now: float,
                core: Endpoint) -> list[Event]:
    """The leg placed for the caller failed: back at the reception, with one failure more
    (a PIN prompt, which has nowhere else to go, says goodbye); a meeting it was joining
    is left."""
    r = _reception(call)
    assert r.lobby is not None
    events = leave_meeting(ctx, call, now, core)
    call.meeting = None
    reception_leg.dropped(ctx, call, r.lobby)
    log.info("reception_leg_failed", call_id=call.inbound.call_id, to=r.referring, reason=why)
    failure, r.referring, r.pin, r.routes_to = f"{r.referring}: {why}", "", "", None
    service = call.decision.service
    if service is None or service.type != "virtual_reception":
        r.outcome = f"could not reach {failure}"
        return events + _leave(ctx, call, f"reception: {r.outcome}")
    r.asking, r.pin_for, r.target = "number", None, ""
    return events + _failed(ctx, call, f"could not reach {failure}",
                            ("meeting_not_found", "enter_number"))


def _failed(ctx: Context, call: Call, why: str,
            prompts: tuple[str, ...] | None = None) -> list[Event]:
    r = _reception(call)
    r.failures += 1
    r.typing, r.digits, r.entry_until = False, "", None  # the next entry starts afresh
    if r.failures >= MAX_FAILURES:
        r.outcome = f"{why}, {MAX_FAILURES} times"
        return _leave(ctx, call, f"reception: {r.outcome}")
    ctx.actions.append(Play(call.id, r.media, prompts or r.prompts()))
    return []


def _leave(ctx: Context, call: Call, reason: str,
           prompts: tuple[str, ...] = ("goodbye",)) -> list[Event]:
    r = _reception(call)
    r.leaving = reason
    ctx.actions.append(Play(call.id, r.media, prompts))
    return []


def _wait(ctx: Context, call: Call, now: float) -> None:
    r = _reception(call)
    r.entry_until = now + ENTRY_TIMEOUT
    ctx.push(r.entry_until, call, Due.ENTRY)


def _reception(call: Call) -> Reception:
    assert call.reception is not None
    return call.reception


def _sipfrag_status(request: Request) -> int | None:
    """The status of the message/sipfrag body of a refer NOTIFY (RFC 3420)."""
    words = request.body.split(b"\r\n", 1)[0].split()
    if len(words) >= 2 and words[0] == b"SIP/2.0" and words[1].isdigit():
        return int(words[1])
    return None
