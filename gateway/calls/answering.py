"""The node answering a caller with media of its own (the Test Call Service, the Virtual
Reception, a Lync meeting's lobby prompt): the 200 OK carrying that media's answer, and
the caller's leg made a confirmed dialog with its session timer, its CDR answered."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.calls.call import Call, CallState
from gateway.calls.context import Context
from gateway.calls.media_side import MediaSide
from gateway.sip.dialog import DialogState
from gateway.sip.message import make_response
from gateway.sip.transaction_layer import Event

if TYPE_CHECKING:
    from gateway.sip.endpoint import Endpoint


def answer_caller(ctx: Context, call: Call, media: MediaSide, now: float,
                  core: Endpoint) -> list[Event]:
    """200 OK with `media`'s answer to the caller's offer; raises SdpError (nothing
    changed) when it has none to give."""
    caller = call.caller
    assert caller.dialog is not None
    body, content_type = media.answer((b"", None), final=True)
    source = call.in_txn.peer
    headers = [("Contact", ctx.local.contact(source.transport, source.host)),
               ("Allow", core.allow), ("Supported", "timer")]
    if call.in_session is not None:
        headers += call.in_session.headers
    ok = make_response(call.inbound, 200, "OK", to_tag=call.in_tag, headers=headers,
                       body=body, content_type=content_type)
    caller.sdp_to = body
    caller.dialog.state = DialogState.CONFIRMED
    call.state = CallState.CONNECTED
    caller.timer = call.in_session.leg(now) if call.in_session else None
    caller.allows_update = "update" in call.inbound.tokens("allow")
    ctx.timer_due(call, caller)
    ctx.media_due(call, now)
    call.record.answered = ctx.wall_clock()
    ctx.record(call.record, "update")
    ctx.by_dialog[(call.inbound.call_id, call.in_tag)] = call
    return core.respond(call.inbound, call.in_txn, ok, now)
