"""The Virtual Reception hands a caller on by a leg of its own: for a caller that takes no
REFER (a SIP caller whose INVITE's Allow does not list REFER; any caller that refused ours,
or whose call placed for ours failed), the node places the callee leg itself, through the
same set-up as a dialled alias (`placement.set_up`: registrations, `call_via`, RFC 3263,
failover), while the caller's leg stays up.

The reception's media makes that leg's media side (`Receiving.onward`): a SIP caller's is
anchored as for a dialled alias; a Lync caller's keeps Lync's ICE session and SRTP and
relays them to the callee (`lync_onward`). Until the leg answers, the reception's media is
parked beside it (`Call.parked`): should the leg fail, or not answer within
`placement.SETUP_LIMIT`, the caller is back at the prompts on the stream it never left.
Once it answers, the caller is re-INVITEd onto the relay toward the callee (the next offer
of the session the reception's answer began, RFC 3264 8) unless what it is to get is what
it has already (a Lync caller whose codec the callee kept: only the far side of the relay
moved), the reception's media is closed, and the call goes on as any call under its one
CDR (the reception's service, the callee leg's Call-ID and target). While the leg is set up
and the caller is moved onto it, an offer from the caller is answered 491 (`Call.pending`):
there is no session yet to carry it to.

`joined` and `moved` serve a Lync meeting dialled directly too: its lobby prompt answers
the caller with media of the node's own, parked in front of the MCU's leg in the same way
(`meeting`, through `placement.HandsOn`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from gateway import logs
from gateway.calls.actions import Close
from gateway.calls.call import Call, CallState, InDialogRequest, Leg, Outbound, Purpose, Role
from gateway.calls.context import Context
from gateway.calls.lync_reception import LyncReception
from gateway.calls.media_side import MediaSide
from gateway.calls.placement import set_up, target_uri
from gateway.calls.prompter import Prompting
from gateway.calls.settings import CallSettings
from gateway.calls.teardown import hang_up
from gateway.sip.errors import SipRequestError
from gateway.sip.message import Request, Response
from gateway.sip.transaction_layer import Event, TransactionLayer
from ice.ports import PortAllocator
from routing.engine import Decision
from sdp.errors import NotAcceptable, SdpError
from sdp.model import Line
from sdp.parse import parse_sdp

if TYPE_CHECKING:
    from gateway.sip.endpoint import Endpoint

log = logs.get(__name__)
SDP = "application/sdp"


class Receiving(Prompting, Protocol):
    """The reception's media, as it hands its caller on."""

    def onward(self, request: Request, decision: Decision, settings: CallSettings,
               ports: PortAllocator, seen_by_caller: str) -> MediaSide:
        """The media side of the leg placed for the caller (`request`: its INVITE)."""
        ...


def begin(ctx: Context, call: Call, decision: Decision, reception: Receiving, now: float,
          core: Endpoint) -> list[Event]:
    """The callee leg toward what `decision` routes to, set up as for a dialled alias, its
    media made by the `reception`'s. Raises SipError or SdpError when it cannot even start
    (nothing the reception placed is left behind then)."""
    target = target_uri(decision)
    if target is None:
        raise SipRequestError(404, f"{decision.destination} is not a SIP address")
    assert ctx.ports is not None  # a reception's media is anchored
    media = reception.onward(call.inbound, decision, call.settings, ctx.ports,
                             ctx.local.address_for(call.in_txn.peer.host))
    call.parked, call.media = call.media, media
    call.decision, call.target_uri, call.local = decision, target, False
    call.callee, call.out = Leg(Role.CALLEE), Outbound(interval=call.settings.timers.interval)
    call.record.destination = target
    call.pending = InDialogRequest(call, call.callee, Purpose.HAND_ON)
    log.info("reception_placing", call_id=call.inbound.call_id, target=target)
    return set_up(ctx, call, now, core)


def is_lync(call: Call) -> bool:
    """Whether the reception's caller is Lync (its ICE and SRTP end at the reception)."""
    return isinstance(call.parked or call.media, LyncReception)


def dropped(ctx: Context, call: Call, lobby: Decision) -> None:
    """The leg failed: its media closed, the reception's back, the call the reception's
    (`lobby`: its own decision) again."""
    assert call.parked is not None
    ctx.actions.append(Close(call.media))
    call.media, call.parked = call.parked, None
    call.decision, call.target_uri, call.local = lobby, "", True
    call.callee, call.out = Leg(Role.CALLEE), Outbound()
    call.record.destination, call.record.out_call_id = lobby.destination, None
    call.pending = None


def joined(ctx: Context, call: Call, body: bytes, now: float, core: Endpoint) -> list[Event]:
    """The leg answered (`body`: the relay's side of it, as the caller is to get it): the
    caller is re-INVITEd onto it, and the reception's media closed."""
    caller = call.caller
    dialog, peer, parked = caller.dialog, caller.peer, call.parked
    assert dialog is not None and peer is not None and parked is not None
    ctx.actions.append(Close(parked))
    call.parked, call.reception = None, None  # a call like any from now on
    if body == caller.sdp_to:  # nothing changes for the caller: no re-INVITE
        log.info("reception_handed_on", call_id=call.inbound.call_id, to=call.target_uri,
                 by="leg", out_call_id=call.record.out_call_id, reinvite=False)
        call.pending = None
        return []
    try:
        offer = continued(caller.sdp_to, body)
    except SdpError as exc:
        return hang_up(ctx, call, f"reception: the callee's answer is unusable: {exc}", now,
                       core)
    reinvite = dialog.create_request(
        "INVITE", ctx.local.via(peer.transport, peer.host),
        headers=(("Contact", ctx.local.contact(peer.transport, peer.host)),), body=offer,
        content_type=SDP)
    caller.sdp_to = offer
    log.info("reception_handed_on", call_id=call.inbound.call_id, to=call.target_uri,
             by="leg", out_call_id=call.record.out_call_id)
    call.pending = InDialogRequest(call, caller, Purpose.HAND_ON)
    return core.send_request(reinvite, peer, now, tu_data=call.pending)[1]


def moved(ctx: Context, sent: InDialogRequest, answer: Response | None, now: float,
          core: Endpoint) -> list[Event]:
    """The caller's answer to that re-INVITE: ACKed, and its media pointed at; a caller that
    refuses it cannot reach the callee, and both legs are hung up."""
    call, leg = sent.call, sent.leg
    if (answer is not None and answer.status < 200) or call.state is not CallState.CONNECTED:
        return []
    if call.pending is sent:
        call.pending = None
    if answer is None or answer.status >= 300:
        why = "no answer" if answer is None else f"{answer.status} {answer.reason}"
        return hang_up(ctx, call, f"reception: the caller refused the callee's media ({why})",
                       now, core)
    dialog, peer = leg.dialog, leg.peer
    assert dialog is not None and peer is not None
    events = TransactionLayer.send_stateless(dialog.ack(ctx.local.via(peer.transport,
                                                                      peer.host)), peer)
    leg.sdp_from = answer.body
    try:
        call.media.relay_answer(from_caller=True, body=answer.body)
    except SdpError as exc:
        return events + hang_up(ctx, call, f"reception: the caller's answer is unusable: "
                                f"{exc}", now, core)
    return events


def continued(previous: bytes, body: bytes) -> bytes:
    """`body` as the next offer of the session `previous` (our last SDP on that leg) began:
    its o= line, one version up (RFC 3264 8)."""
    origin = parse_sdp(previous).origin
    if len(origin) < 3 or not origin[2].isdigit():
        raise NotAcceptable("our last SDP on the caller's leg has no usable o= line")
    origin[2] = str(int(origin[2]) + 1)
    description = parse_sdp(body)
    description.session.lines[:] = [Line("o", " ".join(origin), line.number)
                                    if line.kind == "o" else line
                                    for line in description.session.lines]
    return description.to_bytes()
