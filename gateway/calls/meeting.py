"""A SIP caller joining a Lync/SfB meeting by Conference ID (a rule whose target is
`lync_meeting_direct`): the look-up, the focus, the lobby and the A/V MCU, before and
around the callee leg, which is the MCU's.

1. The rule's rewrite left the Conference ID; the call's media is made as for any call
   toward Lync (ICE, SRTP) and the rule's Lync server resolved (`Prepare`); then the ID is
   looked up (C3P `getConference` in a SERVICE to the server's focus factory), or taken
   from the look-up cache. Unknown or expired: 404 with the reason; a server that cannot
   answer: 503, one that does not: 504; a malformed answer: 502.
2. INVITE to the focus carrying `addUser` ([MS-CONFBAS] 2.2.3.3): its 2xx says joined, or
   pending (the lobby); then SUBSCRIBE to the focus's `conference` event, whose NOTIFYs
   (`conference_info.Roster`) name the A/V MCU and say when the lobby lets us in or sends
   us away. The subscription is refreshed in its dialog before what the focus granted
   lapses (`resubscribe`); a refresh refused in the meeting ends the subscription only.
   INFOs the focus sends on its dialog (`info`): a C3P response is taken (200), unreadable
   C3P is 400, anything else 415.
3. Admitted and the MCU known: `addUser` for the A/V MCU ([MS-CONFAV]) in an INFO on the
   focus dialog, its answer in the INFO's 2xx; then the callee leg, INVITE to the MCU with
   our ICE/SRTP offer, placed and answered by `placement` as any call toward Lync.
4. Leaving (`Meeting.leave`, from every teardown path): BYE to the focus, the subscription
   ended (SUBSCRIBE, Expires: 0); a focus that answers after we gave up gets ACK and BYE.
   A BYE from the focus ends the call.

Through a Virtual Reception with a `lync_server` (`look_up`), the caller's leg is the
reception's, answered already: the Conference ID entered is looked up on the reception's
server first, and what it finds goes back to the reception (`Reception.meeting_found`),
which routes the focus URI (a `lync_via_virtual_reception` rule) and hands the caller on
by a leg of its own; that leg's set-up resolves the rule's Lync server and comes back here
(`prepared`) to join the focus found. Every failure before the caller is in the meeting
goes back to the reception (`Reception.meeting_failed`): a prompt and another entry, not
the call's end.

The lobby, dialled directly (`_prompt`): the caller is answered by media of the node's
own (`reception_side`, as the Virtual Reception answers) and hears "please wait" every
`PROMPT_PAUSE` seconds; that media is parked in front of the MCU's leg (`Call.parked`), and
once the MCU answers the caller is re-INVITEd onto the relay toward it by the reception's
own hand-on (`reception_leg.joined`, through `Meeting.joined`). Sent away or never let in,
the caller hears "you were not let in to the meeting, goodbye" and gets BYE (`_goodbye`);
the focus is left at once. A caller the node cannot play to (no anchored media, SRTP, a
Lync caller, no G.711 or G.722 offered) hears ringing instead and gets 403 or 480.

Every request goes to the rule's Lync server over the node's connection to it (the
trusted mutual-TLS one in a deployment). How Lync resolves a PSTN Conference ID on the
wire, and where it carries the MCU addUser's answer, are not in the Open Specifications:
see `gateway.conferencing.c3p`.
"""

from __future__ import annotations

import itertools
import json
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from gateway import logs
from gateway.calls import placement, reception_leg
from gateway.calls.actions import Close, Play, Prepare
from gateway.calls.answering import answer_caller
from gateway.calls.bodies import offered_sdp
from gateway.calls.call import Call, CallState, InDialogRequest, Purpose
from gateway.calls.context import Context
from gateway.calls.deadlines import Due
from gateway.calls.lync_caller import wants_ice
from gateway.calls.media_side import PassThrough
from gateway.calls.prompter import Prompting
from gateway.calls.reception_side import plain_reception
from gateway.calls.refusals import refusal
from gateway.calls.teardown import drop_unanswered, fail, hang_up
from gateway.conferencing import c3p, conference_info
from gateway.conferencing.conference_info import Roster
from gateway.conferencing.errors import ConferenceNotFound, ConferencingError
from gateway.resolver.rfc3263 import Target
from gateway.sip.dialog import Dialog
from gateway.sip.errors import SipError
from gateway.sip.message import Request, Response, make_response, new_branch, new_call_id
from gateway.sip.transaction_layer import Event, RequestReceived, TransactionLayer
from gateway.sip.uri import SipUri, parse_uri
from gateway.transport.peer import Peer
from sdp.errors import SdpError

if TYPE_CHECKING:
    from gateway.sip.endpoint import Endpoint

log = logs.get(__name__)
SUBSCRIPTION_SECONDS = 3600  # asked for; the focus's 2xx says what it grants
REFRESH_AT = 0.9  # of the granted time: the re-SUBSCRIBE goes before it lapses (RFC 6665)
PROMPT_PAUSE = 10.0  # seconds of quiet between the lobby's "please wait"s
NOT_ADMITTED = ("not_admitted", "goodbye")
Step = Literal["lookup", "focus", "subscribe", "mcu", "resubscribe"]


@dataclass(eq=False, slots=True)
class Asked:
    """Marks the client transaction of a request the meeting join sent."""

    call: Call
    step: Step


@dataclass(eq=False, slots=True)
class Meeting:
    conference_id: str
    server: str  # the Lync server (config name) that looks it up and hosts the meeting
    me: str  # who we are toward the meeting: the From of every request, the MCU's too
    endpoint: str = field(default_factory=lambda: f"urn:uuid:{uuid.uuid4()}")
    targets: list[Target] = field(default_factory=list)  # the Lync server, once resolved
    focus: str = ""
    roster: Roster | None = None
    focus_dialog: Dialog | None = None
    focus_invite: Request | None = None
    subscription: Dialog | None = None
    subscribe: Request | None = None
    admitted: bool = False  # the focus has us in the meeting (not, or no longer, the lobby)
    mcu_asked: bool = False
    lobby_since: float | None = None
    lobby_until: float = 0.0
    lobby_seconds: float = 0.0
    refresh_at: float | None = None  # the subscription's refresh, on the deadline heap
    prompt_at: float | None = None  # the lobby's next "please wait", on the deadline heap
    prompts: Prompting | None = None  # the media the lobby prompt answered the caller by
    goodbye: str = ""  # why the call ends once the goodbye prompt is over
    leg_until: float | None = None  # the MCU's deadline to answer a prompted caller's leg
    outcome: str = "looking up"
    left: bool = False
    request_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def owns(self, call_id: str) -> bool:
        """Whether a request with this Call-ID is the focus's (its dialog or our
        subscription), not the caller's or the MCU's."""
        return any(d is not None and d.call_id == call_id
                   for d in (self.focus_dialog, self.subscription)) or (
            self.subscribe is not None and self.subscribe.call_id == call_id)

    def summary(self) -> str:
        """The CDR's meeting column: what was joined and how it went, as JSON. The focus URI
        names the meeting; no key or passcode of it is ever held here."""
        return json.dumps({"conference_id": self.conference_id, "focus": self.focus or None,
                           "lobby_seconds": round(self.lobby_seconds, 1),
                           "outcome": self.outcome})

    def leave(self, ctx: Context, call: Call, now: float, core: Endpoint) -> list[Event]:
        """The call is ending: BYE to the focus and the subscription ended. Idempotent."""
        if self.left:
            return []
        self.left = True
        self._lobby_over(now)
        call.record.meeting = self.summary()
        events: list[Event] = []
        for dialog in (self.subscription, self.focus_dialog):
            if dialog is not None:
                ctx.by_dialog.pop((dialog.call_id, dialog.local_tag), None)
        if self.subscribe is not None:
            ctx.by_dialog.pop((self.subscribe.call_id, self.subscribe.from_.tag or ""), None)
        if self.subscription is not None:
            events += _send(ctx, self.subscription, "SUBSCRIBE", self.targets, now, core,
                            _unsubscribe())
        if self.focus_dialog is not None:
            events += _send(ctx, self.focus_dialog, "BYE", self.targets, now, core)
        return events

    # What placement reports of the MCU's leg, placed while the lobby prompt answered the
    # caller (as the reception's own leg: `placement.HandsOn`).
    def joined(self, ctx: Context, call: Call, body: bytes, now: float,
               core: Endpoint) -> list[Event]:
        """The MCU answered: the caller moved from the prompt onto the relay toward it."""
        return reception_leg.joined(ctx, call, body, now, core)

    def leg_failed(self, ctx: Context, call: Call, why: str, now: float,
                   core: Endpoint) -> list[Event]:
        return _goodbye(ctx, call, why, ("goodbye",), now, core)

    def _lobby_over(self, now: float) -> None:
        if self.lobby_since is not None:
            self.lobby_seconds += now - self.lobby_since
            self.lobby_since = None


def is_meeting(call: Call) -> bool:
    rule = call.decision.rule
    return rule is not None and rule.target == "lync_meeting_direct"


def set_up(ctx: Context, call: Call, now: float, core: Endpoint) -> list[Event]:
    """The call's media made and its Lync server resolved (`Prepare`); then `prepared`."""
    decision, settings = call.decision, call.settings
    conference_id = decision.destination or ""
    if not c3p.is_conference_id(conference_id):
        return fail(ctx, call, 404, f"Not Found ({conference_id!r} is not a Conference ID)",
                    now, core)
    rule = decision.rule
    assert rule is not None
    # The guide's "Lync / Skype for Business server" of the rule, else its location's.
    server = rule.call_via if rule.call_via != "dns" else settings.location_lync_server.get(
        decision.outgoing_location or settings.location, "")
    return _begin(ctx, call, conference_id, server, now, core)


def look_up(ctx: Context, call: Call, conference_id: str, server: str, now: float,
            core: Endpoint) -> list[Event]:
    """A Conference ID entered at a Virtual Reception whose `lync_server` is `server`: its
    look-up (the caller's leg is the reception's, its media taken already: only the server
    is resolved). Its outcome goes to `call.reception`."""
    return _begin(ctx, call, conference_id, server, now, core)


def _begin(ctx: Context, call: Call, conference_id: str, server: str, now: float,
           core: Endpoint) -> list[Event]:
    hop = call.settings.next_hops.get(server)
    if hop is None:
        return _fail(ctx, call, 404, f"Not Found (no Lync server to look Conference ID "
                     f"{conference_id} up on)", now, core)
    me = placement.lync_identity(call) or str(call.inbound.from_.uri)
    call.meeting = Meeting(conference_id, server, me)
    host = f"[{hop.address}]" if ":" in hop.address else hop.address
    uri = parse_uri(f"sip:{host}:{hop.port};transport={hop.transport.lower()}")
    assert isinstance(uri, SipUri)
    # A reception's caller has its media: nothing more is taken for the look-up.
    media = PassThrough() if call.reception is not None else call.media
    ctx.actions.append(Prepare(call.id, media, resolve=uri))
    return []


def prepared(ctx: Context, call: Call, targets: list[Target] | None,
             error: BaseException | None, now: float, core: Endpoint) -> list[Event]:
    """The Lync server found (and the call's media ready): the look-up, from the cache or
    asked; or, once a reception's look-up found the focus, its leg set up: the join."""
    meeting = call.meeting
    assert meeting is not None
    if call.state is CallState.ENDED:
        return []
    if call.parked is not None and not call.answered and call.reception is None:
        return _answer_in_lobby(ctx, call, error, now, core)
    # None: placement found the targets without a look-up (a server named by address).
    targets = targets if targets is not None else call.out.targets
    if error is not None or not targets:
        # Not the caller's fault, nor the meeting's: the refusal says what went wrong.
        status, reason = refusal(error, call.inbound.call_id) if error is not None else (
            404, f"Not Found (no address for the Lync server {meeting.server})")
        return _fail(ctx, call, status, reason, now, core)
    meeting.targets = targets
    if meeting.focus:
        return _join(ctx, call, meeting.focus, now, core)
    if not call.connected:
        call.state = CallState.CALLING
    known = ctx.lookups.get(meeting.server, meeting.conference_id, now)
    if known is not None and not known.focus:
        meeting.outcome = "not found"
        return _fail(ctx, call, 404, ConferenceNotFound(meeting.conference_id,
                                                        known.reason).reason, now, core)
    if known is not None:
        return _found(ctx, call, known.focus, now, core)
    factory = f"{meeting.me};gruu;opaque=app:conf:focusfactory"
    body = c3p.lookup_request(next(meeting.request_ids), meeting.me, factory,
                              meeting.conference_id)
    request = _new_request(ctx, meeting, "SERVICE", factory, core.new_tag(), body,
                           c3p.CONTENT_TYPE)
    log.info("meeting_lookup", call_id=call.inbound.call_id, server=meeting.server,
             conference_id=meeting.conference_id)
    return _out(ctx, call, request, "lookup", now, core)


def answered(ctx: Context, mark: Asked, answer: Response | None, now: float,
             core: Endpoint) -> list[Event]:
    """A response (None: a timeout) to a request of the join."""
    call, step = mark.call, mark.step
    meeting = call.meeting
    assert meeting is not None
    if answer is not None and answer.status < 200:
        return []
    if call.state is CallState.ENDED or meeting.left:
        return _too_late(ctx, meeting, step, answer, now, core)
    if step == "resubscribe" and answer is None:
        return _resubscribed(ctx, call, None, now, core)
    if answer is None:
        what = "the Lync server" if step == "lookup" else "the meeting's focus"
        meeting.outcome = f"no answer to {step}"
        return _fail(ctx, call, 504 if step == "lookup" else 408,
                    f"{'Server Time-out' if step == 'lookup' else 'Request Timeout'} "
                    f"({what} did not answer the {step})", now, core)
    try:
        if step == "lookup":
            return _looked_up(ctx, call, answer, now, core)
        if step == "focus":
            return _focus_answered(ctx, call, answer, now, core)
        if step == "subscribe":
            return _subscribed(ctx, call, answer, now, core)
        if step == "resubscribe":
            return _resubscribed(ctx, call, answer, now, core)
        return _mcu_added(ctx, call, answer, now, core)
    except ConferencingError as exc:
        return _refused(ctx, call, exc, now, core)


def _looked_up(ctx: Context, call: Call, answer: Response, now: float,
               core: Endpoint) -> list[Event]:
    meeting = call.meeting
    assert meeting is not None
    if answer.status >= 300:
        meeting.outcome = "look-up refused"
        return _fail(ctx, call, 503, f"Service Unavailable (Conference ID look-up: the Lync "
                    f"server answered {answer.status} {answer.reason})", now, core)
    try:
        focus = c3p.focus_of(c3p.read_response(answer.body), meeting.conference_id)
    except ConferenceNotFound as exc:
        ctx.lookups.missing(meeting.server, meeting.conference_id, exc.reason, now)
        meeting.outcome = "not found"
        return _fail(ctx, call, 404, exc.reason, now, core)
    ctx.lookups.found(meeting.server, meeting.conference_id, focus, now)
    return _found(ctx, call, focus, now, core)


def _found(ctx: Context, call: Call, focus: str, now: float, core: Endpoint) -> list[Event]:
    """The Conference ID names `focus`: joined at once when dialled directly; a
    reception's caller is handed on by the reception, whose leg comes back to `prepared`."""
    meeting = call.meeting
    assert meeting is not None
    if call.reception is None:
        return _join(ctx, call, focus, now, core)
    meeting.focus = focus
    log.info("meeting_found", call_id=call.inbound.call_id,
             conference_id=meeting.conference_id, focus=focus)
    return call.reception.meeting_found(ctx, call, focus, now, core)


def _join(ctx: Context, call: Call, focus: str, now: float, core: Endpoint) -> list[Event]:
    """INVITE to the focus with our addUser."""
    meeting = call.meeting
    assert meeting is not None
    meeting.focus, meeting.outcome = focus, "joining"
    meeting.roster = Roster(meeting.me)
    body = c3p.add_user_focus(next(meeting.request_ids), meeting.me, focus, meeting.endpoint)
    request = _new_request(ctx, meeting, "INVITE", focus, core.new_tag(), body,
                           c3p.CONTENT_TYPE)
    meeting.focus_invite = request
    log.info("meeting_join", call_id=call.inbound.call_id, focus=focus)
    return _out(ctx, call, request, "focus", now, core)


def _focus_answered(ctx: Context, call: Call, answer: Response, now: float,
                    core: Endpoint) -> list[Event]:
    meeting = call.meeting
    assert meeting is not None and meeting.focus_invite is not None
    if answer.status >= 300:
        meeting.outcome = f"focus refused: {answer.status}"
        status = 403 if answer.status in (401, 403, 603) else 502
        return _fail(ctx, call, status, f"{'Forbidden' if status == 403 else 'Bad Gateway'} "
                    f"(the meeting's focus answered {answer.status} {answer.reason})",
                    now, core)
    try:
        dialog = Dialog.from_response(meeting.focus_invite, answer)
    except (SipError, ValueError) as exc:
        meeting.outcome = "focus answer unusable"
        return _fail(ctx, call, 502, f"Bad Gateway (the focus's answer is unusable: {exc})",
                    now, core)
    meeting.focus_dialog = dialog
    ctx.by_dialog[(dialog.call_id, dialog.local_tag)] = call
    events = TransactionLayer.send_stateless(dialog.ack(_via(ctx, meeting)), _peer(meeting))
    # From here on the focus dialog is ours to end: a malformed addUser answer still
    # leaves with a BYE (fail -> leave), after the ACK.
    try:
        admission = c3p.admission(c3p.read_response(answer.body))
    except ConferencingError as exc:
        return events + _refused(ctx, call, exc, now, core)
    if admission == "lobby":
        _enter_lobby(ctx, call, now)
    else:
        meeting.admitted = True
    request = _new_request(ctx, meeting, "SUBSCRIBE", meeting.focus, core.new_tag(), b"",
                           None, (("Event", conference_info.EVENT),
                                  ("Accept", conference_info.CONTENT_TYPE),
                                  ("Expires", str(SUBSCRIPTION_SECONDS))))
    meeting.subscribe = request
    # A NOTIFY may come before the SUBSCRIBE's 2xx (RFC 6665 4.1.2.4): known by our tag.
    ctx.by_dialog[(request.call_id, request.from_.tag or "")] = call
    return events + _out(ctx, call, request, "subscribe", now, core)


def _subscribed(ctx: Context, call: Call, answer: Response, now: float,
                core: Endpoint) -> list[Event]:
    meeting = call.meeting
    assert meeting is not None and meeting.subscribe is not None
    if answer.status >= 300:
        meeting.outcome = "no conference-info"
        return _fail(ctx, call, 502, f"Bad Gateway (the focus refused the conference "
                    f"subscription: {answer.status} {answer.reason})", now, core)
    try:
        meeting.subscription = Dialog.from_response(meeting.subscribe, answer)
    except (SipError, ValueError) as exc:
        meeting.outcome = "no conference-info"
        return _fail(ctx, call, 502, f"Bad Gateway (the focus's answer is unusable: {exc})",
                    now, core)
    _refresh_due(ctx, call, answer, now)
    return _advance(ctx, call, now, core)


def _refresh_due(ctx: Context, call: Call, answer: Response, now: float) -> None:
    """The next re-SUBSCRIBE, before what the focus granted (its 2xx's Expires, else ours)
    lapses; none when it granted nothing."""
    meeting = call.meeting
    assert meeting is not None
    try:
        granted = answer.expires
    except SipError:
        granted = None
    seconds = min(SUBSCRIPTION_SECONDS if granted is None else granted, SUBSCRIPTION_SECONDS)
    if seconds <= 0:
        meeting.refresh_at = None
        return
    meeting.refresh_at = now + seconds * REFRESH_AT
    ctx.push(meeting.refresh_at, call, Due.SUBSCRIPTION)


def resubscribe(ctx: Context, call: Call, now: float, core: Endpoint) -> list[Event]:
    """The conference subscription is refreshed in its dialog (RFC 6665 4.1.2.1)."""
    meeting = call.meeting
    assert meeting is not None
    meeting.refresh_at = None
    dialog = meeting.subscription
    if dialog is None or meeting.left:
        return []
    request = dialog.create_request("SUBSCRIBE", _via(ctx, meeting), headers=(
        ("Event", conference_info.EVENT), ("Accept", conference_info.CONTENT_TYPE),
        ("Expires", str(SUBSCRIPTION_SECONDS))))
    return _out(ctx, call, request, "resubscribe", now, core)


def _resubscribed(ctx: Context, call: Call, answer: Response | None, now: float,
                  core: Endpoint) -> list[Event]:
    """The refresh's answer: re-armed; refused or unanswered, the subscription is over. In
    the meeting the call goes on (the MCU's leg carries it, its roster is not needed);
    still waiting to be let in, the join has lost what would let it in."""
    meeting = call.meeting
    assert meeting is not None
    if answer is not None and answer.status < 300:
        _refresh_due(ctx, call, answer, now)
        return []
    why = f"{answer.status} {answer.reason}" if answer is not None else "no answer"
    log.warning("meeting_subscription_lost", call_id=call.inbound.call_id, why=why)
    dialog = meeting.subscription
    if dialog is not None:
        ctx.by_dialog.pop((dialog.call_id, dialog.local_tag), None)
        meeting.subscription = None
    if _in_meeting(call):
        return []
    meeting.outcome = "no conference-info"
    return _fail(ctx, call, 502, f"Bad Gateway (the focus ended the conference "
                 f"subscription: {why})", now, core)


def _mcu_added(ctx: Context, call: Call, answer: Response, now: float,
               core: Endpoint) -> list[Event]:
    meeting, roster = call.meeting, call.meeting.roster if call.meeting else None
    assert meeting is not None and roster is not None
    if answer.status >= 300:
        meeting.outcome = "MCU refused"
        return _fail(ctx, call, 502, f"Bad Gateway (the focus answered the A/V MCU addUser "
                    f"with {answer.status} {answer.reason})", now, core)
    if c3p.admission(c3p.read_response(answer.body)) == "lobby":
        meeting.mcu_asked, meeting.admitted = False, False  # asked again once admitted
        _enter_lobby(ctx, call, now)
        return []
    meeting.outcome = "joined"
    if _answered_in_lobby(call):  # placement's own set-up limit ended with the answer
        meeting.leg_until = now + placement.SETUP_LIMIT
        ctx.push(meeting.leg_until, call, Due.LEG)
    call.target_uri = roster.av_uri
    call.out.targets = list(meeting.targets)
    log.info("meeting_mcu", call_id=call.inbound.call_id, mcu=roster.av_uri)
    return placement.place(ctx, call, now, core)


def _advance(ctx: Context, call: Call, now: float, core: Endpoint) -> list[Event]:
    """The A/V MCU addUser, once we are admitted, subscribed and the MCU is known."""
    meeting = call.meeting
    assert meeting is not None
    roster, dialog = meeting.roster, meeting.focus_dialog
    if (meeting.mcu_asked or meeting.left or not meeting.admitted or roster is None
            or not roster.av_uri or dialog is None or meeting.subscription is None):
        return []
    meeting.mcu_asked = True
    body = c3p.add_user_mcu(next(meeting.request_ids), meeting.me, meeting.focus,
                            roster.av_uri, meeting.endpoint)
    request = dialog.create_request("INFO", _via(ctx, meeting), body=body,
                                    content_type=c3p.CONTENT_TYPE)
    return _out(ctx, call, request, "mcu", now, core)


def notify(ctx: Context, call: Call, event: RequestReceived, now: float,
           core: Endpoint) -> list[Event]:
    """A conference-info NOTIFY from the focus: the roster, the MCU, the lobby."""
    request, meeting = event.request, call.meeting
    assert meeting is not None and meeting.roster is not None
    try:
        changed = meeting.roster.apply(request.body)
    except ConferencingError as exc:
        log.warning("meeting_notify_malformed", call_id=call.inbound.call_id,
                    reason=exc.reason)
        events = core.respond(request, event.transaction, make_response(
            request, 400, "Bad Request (unreadable conference-info)"), now)
        if _in_meeting(call):  # in the meeting already: its roster is not needed to stay
            return events
        return events + _refused(ctx, call, exc, now, core)
    events = core.respond(request, event.transaction, make_response(request, 200), now)
    if not changed or call.state is CallState.ENDED:
        return events
    lobby = meeting.roster.lobby()
    if lobby == "refused":
        meeting.outcome = "refused in the lobby" if not meeting.admitted else "removed"
        if _in_meeting(call):
            return events + hang_up(ctx, call, "removed from the meeting", now, core)
        return events + _fail(ctx, call, 403, "Forbidden (the meeting did not admit us)",
                             now, core, NOT_ADMITTED)
    if lobby == "admitted" and not meeting.admitted:
        meeting.admitted = True
        meeting._lobby_over(now)
        log.info("meeting_admitted", call_id=call.inbound.call_id,
                 lobby_seconds=round(meeting.lobby_seconds, 1))
        if _answered_in_lobby(call):
            ctx.actions.append(Play(call.id, _prompts(call), ("connecting",)))
    return events + _advance(ctx, call, now, core)


def info(ctx: Context, call: Call, event: RequestReceived, now: float,
         core: Endpoint) -> list[Event]:
    """An INFO the focus sends on its own dialog. A C3P response to one of our requests
    (a pending addUser answered later) is taken: 200, logged, and nothing more done with
    it (the conference-info NOTIFYs say what changed for us). A C3P document we cannot
    read is 400; any other body is no C3P notification: 415, saying what we accept."""
    request = event.request
    content_type = request.content_type
    if content_type is None or content_type.type != c3p.CONTENT_TYPE:
        return core.respond(request, event.transaction, make_response(
            request, 415, "Unsupported Media Type (only C3P is taken from the focus)",
            headers=(("Accept", c3p.CONTENT_TYPE),)), now)
    try:
        response = c3p.read_response(request.body)
    except ConferencingError as exc:
        log.warning("meeting_info_malformed", call_id=call.inbound.call_id,
                    reason=exc.reason)
        return core.respond(request, event.transaction, make_response(
            request, 400, "Bad Request (unreadable C3P)"), now)
    log.info("meeting_c3p_info", call_id=call.inbound.call_id, command=response.command,
             code=response.code, request_id=response.request_id)
    return core.respond(request, event.transaction, make_response(request, 200), now)


def focus_bye(ctx: Context, call: Call, event: RequestReceived, now: float,
              core: Endpoint) -> list[Event]:
    """The focus ended our place in the meeting: the call ends with it."""
    request, meeting = event.request, call.meeting
    assert meeting is not None
    events = core.respond(request, event.transaction, make_response(request, 200), now)
    dialog = meeting.focus_dialog
    if dialog is not None and dialog.call_id == request.call_id:
        ctx.by_dialog.pop((dialog.call_id, dialog.local_tag), None)
        meeting.focus_dialog = None
    if meeting.outcome == "joined":
        meeting.outcome = "ended by the meeting"
    if _in_meeting(call):
        return events + hang_up(ctx, call, "the meeting ended our place in it", now, core)
    if meeting.lobby_since is not None:
        meeting.outcome = "refused in the lobby"
    return events + _fail(ctx, call, 403, "Forbidden (the meeting ended our join)", now, core,
                          NOT_ADMITTED)


def lobby_timed_out(ctx: Context, call: Call, now: float, core: Endpoint) -> list[Event]:
    meeting = call.meeting
    assert meeting is not None
    meeting.outcome = "lobby timeout"
    limit = _lobby_limit(call)
    log.info("meeting_lobby_timeout", call_id=call.inbound.call_id, after=limit)
    return _fail(ctx, call, 480, f"Temporarily Unavailable (nobody admitted us from the "
                 f"meeting's lobby in {limit:g} s)", now, core, NOT_ADMITTED)


def _lobby_limit(call: Call) -> int:
    """The rule's lobby_timeout_seconds (the rule that led to the meeting)."""
    rule = call.decision.rule
    assert rule is not None
    return rule.lobby_timeout_seconds


def _enter_lobby(ctx: Context, call: Call, now: float) -> None:
    meeting = call.meeting
    assert meeting is not None
    meeting.outcome = "lobby"
    if meeting.lobby_since is None:
        meeting.lobby_since = now
        meeting.lobby_until = now + _lobby_limit(call)
        ctx.push(meeting.lobby_until, call, Due.LOBBY)
        log.info("meeting_lobby", call_id=call.inbound.call_id)
        if _answered_in_lobby(call):  # back in it after the MCU addUser
            prompt_again(ctx, call)
        else:
            _prompt(ctx, call)


def _prompt(ctx: Context, call: Call) -> None:
    """A caller that dialled the meeting is to hear the lobby's prompt: its own media made
    from its offer, as the Virtual Reception's (`plain_reception`: plain RTP, G.711 or
    G.722), parked in front of the MCU's leg, the caller answered once its ports are
    taken (`_answer_in_lobby`). Any other caller keeps ringing."""
    meeting = call.meeting
    assert meeting is not None
    if call.reception is not None or call.answered or call.parked is not None or (
            ctx.ports is None):
        return
    try:
        offer = offered_sdp(call.inbound)
        if offer is None or wants_ice(offer):
            return
        media = plain_reception(offer, ctx.ports, ctx.local.address,
                                call.settings.media_timeout,
                                ctx.local.address_for(call.in_txn.peer.host), None)
    except SdpError as exc:
        log.info("meeting_lobby_unprompted", call_id=call.inbound.call_id, reason=str(exc))
        return
    call.parked = meeting.prompts = media
    # The caller's offers wait (491) until it is moved onto the MCU's media, as at a
    # reception: there is no session yet to carry them to.
    call.pending = InDialogRequest(call, call.callee, Purpose.HAND_ON)
    ctx.actions.append(Prepare(call.id, media))


def _answer_in_lobby(ctx: Context, call: Call, error: BaseException | None, now: float,
                     core: Endpoint) -> list[Event]:
    """The lobby prompt's ports are taken: 200 OK with its media, and "please wait". Let in
    meanwhile, or no ports: the caller rings on until the MCU answers."""
    meeting, parked = call.meeting, call.parked
    assert meeting is not None and parked is not None
    if error is not None:
        why = str(error)
    elif meeting.lobby_since is None:
        why = "let in before the prompt was ready"
    else:
        try:
            events = answer_caller(ctx, call, parked, now, core)
        except SdpError as exc:
            why = str(exc)
        else:
            log.info("call_connected", call_id=call.inbound.call_id, leg="in", lobby=True)
            ctx.actions.append(Play(call.id, _prompts(call), ("lobby_wait",)))
            return events
    log.info("meeting_lobby_unprompted", call_id=call.inbound.call_id, reason=why)
    ctx.actions.append(Close(parked))
    call.parked = call.pending = None
    return []


def played(ctx: Context, call: Call, now: float, core: Endpoint) -> list[Event]:
    """A prompt of the lobby is over: the goodbye ends the call; "please wait" comes again
    after a pause while the lobby holds the caller."""
    meeting = call.meeting
    assert meeting is not None
    if meeting.goodbye:
        return hang_up(ctx, call, meeting.goodbye, now, core)
    if _answered_in_lobby(call) and meeting.lobby_since is not None:
        meeting.prompt_at = now + PROMPT_PAUSE
        ctx.push(meeting.prompt_at, call, Due.LOBBY_PROMPT)
    return []


def prompt_again(ctx: Context, call: Call) -> list[Event]:
    meeting = call.meeting
    assert meeting is not None
    meeting.prompt_at = None
    if _answered_in_lobby(call) and meeting.lobby_since is not None and not meeting.goodbye:
        ctx.actions.append(Play(call.id, _prompts(call), ("lobby_wait",)))
    return []


def leg_timed_out(ctx: Context, call: Call, now: float, core: Endpoint) -> list[Event]:
    """The MCU has not answered the leg placed behind the lobby prompt in SETUP_LIMIT: it
    is cancelled, and the caller hears goodbye."""
    meeting = call.meeting
    assert meeting is not None
    meeting.leg_until = None
    return _goodbye(ctx, call, f"408 Request Timeout (the A/V MCU did not answer in "
                    f"{placement.SETUP_LIMIT:g} s)", ("goodbye",), now, core)


def _goodbye(ctx: Context, call: Call, why: str, prompts: tuple[str, ...], now: float,
             core: Endpoint) -> list[Event]:
    """A caller the lobby prompt answered is not getting in (`why`): `prompts`, then BYE
    (`played`). The focus is left, and an MCU leg still ringing cancelled, at once."""
    meeting = call.meeting
    assert meeting is not None
    if meeting.goodbye:
        return []
    meeting.goodbye = why
    log.info("meeting_goodbye", call_id=call.inbound.call_id, why=why)
    ctx.actions.append(Play(call.id, _prompts(call), prompts))
    return drop_unanswered(call, now, core) + meeting.leave(ctx, call, now, core)


def _refused(ctx: Context, call: Call, exc: ConferencingError, now: float,
             core: Endpoint) -> list[Event]:
    """The focus sent what we cannot read, or refused us: the caller is told why."""
    meeting = call.meeting
    assert meeting is not None
    meeting.outcome = exc.reason
    log.warning("meeting_failed", call_id=call.inbound.call_id, reason=exc.reason)
    if _in_meeting(call):
        return hang_up(ctx, call, exc.reason, now, core)
    return _fail(ctx, call, exc.status_hint, exc.reason, now, core)


def _in_meeting(call: Call) -> bool:
    """Whether the caller is in the meeting (a reception's caller, and one the lobby prompt
    answered, are answered before)."""
    return call.connected and call.reception is None and call.parked is None


def _prompts(call: Call) -> Prompting:
    assert call.meeting is not None and call.meeting.prompts is not None
    return call.meeting.prompts


def _answered_in_lobby(call: Call) -> bool:
    """Whether the lobby prompt answered this caller, and it is not in the meeting yet."""
    return call.connected and call.reception is None and call.parked is not None


def _fail(ctx: Context, call: Call, status: int, reason: str, now: float,
          core: Endpoint, prompts: tuple[str, ...] = ("goodbye",)) -> list[Event]:
    """The join failed before the caller was in the meeting: the caller gets `status`; or,
    at a reception, the reception has its caller back (`status` says whether the meeting
    was there at all); or, answered by the lobby prompt, it hears `prompts` and gets BYE
    with the status as its reason."""
    if call.reception is not None:
        return call.reception.meeting_failed(ctx, call, status, reason, now, core)
    if _answered_in_lobby(call):
        return _goodbye(ctx, call, f"{status} {reason}", prompts, now, core)
    return fail(ctx, call, status, reason, now, core)


def _too_late(ctx: Context, meeting: Meeting, step: Step, answer: Response | None,
              now: float, core: Endpoint) -> list[Event]:
    """An answer after the call ended: a focus dialog or subscription it set up is ended
    at once, not left open on the Lync server."""
    if answer is None or answer.status >= 300:
        return []
    if step == "focus" and meeting.focus_invite is not None and meeting.focus_dialog is None:
        dialog = Dialog.from_response(meeting.focus_invite, answer)
        meeting.focus_dialog = dialog
        return TransactionLayer.send_stateless(dialog.ack(_via(ctx, meeting)), _peer(
            meeting)) + _send(ctx, dialog, "BYE", meeting.targets, now, core)
    if step == "subscribe" and meeting.subscribe is not None and meeting.subscription is None:
        meeting.subscription = Dialog.from_response(meeting.subscribe, answer)
        return _send(ctx, meeting.subscription, "SUBSCRIBE", meeting.targets, now, core,
                     _unsubscribe())
    return []


def _unsubscribe() -> tuple[tuple[str, str], ...]:
    return (("Event", conference_info.EVENT), ("Expires", "0"))


def _new_request(ctx: Context, meeting: Meeting, method: str, uri: str, tag: str,
                 body: bytes, content_type: str | None,
                 headers: tuple[tuple[str, str], ...] = ()) -> Request:
    """A request outside any dialog, from us to the focus (or its factory)."""
    target = meeting.targets[0]
    request = Request(method, uri)
    h = request.headers
    h.add("Via", f"{_via(ctx, meeting)};branch={new_branch()};rport")
    h.add("Max-Forwards", "70")
    h.add("From", f"<{meeting.me}>;tag={tag}")
    h.add("To", f"<{uri}>")
    h.add("Call-ID", new_call_id(ctx.local.address))
    h.add("CSeq", f"1 {method}")
    h.add("Contact", ctx.local.contact(target.transport, target.address))
    for name, value in headers:
        h.add(name, value)
    request.set_body(body, content_type)
    return request


def _out(ctx: Context, call: Call, request: Request, step: Step, now: float,
         core: Endpoint) -> list[Event]:
    meeting = call.meeting
    assert meeting is not None
    return core.send_request(request, _peer(meeting), now, tu_data=Asked(call, step))[1]


def _send(ctx: Context, dialog: Dialog, method: str, targets: list[Target], now: float,
          core: Endpoint, headers: tuple[tuple[str, str], ...] = ()) -> list[Event]:
    """A request of the leaving, its answer unwatched."""
    if not targets:
        return []
    target = targets[0]
    try:
        request = dialog.create_request(method, ctx.local.via(target.transport,
                                                              target.address), headers=headers)
    except SipError as exc:
        log.warning("meeting_leave_not_sent", method=method, error=str(exc))
        return []
    return core.send_request(request, Peer(target.transport, target.address, target.port,
                                           server_name=target.host), now)[1]


def _via(ctx: Context, meeting: Meeting) -> str:
    target = meeting.targets[0]
    return ctx.local.via(target.transport, target.address)


def _peer(meeting: Meeting) -> Peer:
    target = meeting.targets[0]
    return Peer(target.transport, target.address, target.port, server_name=target.host)
