"""Calls the node answers itself: the Test Call Service (the guide's; built into the default
config as `test-call`), which loops the caller's media back (`echo_side`) for the service's
`duration_seconds` and hangs up, and the Virtual Reception (`reception`), which prompts for
a number or a PIN. The same call life as any call (dialog, session timer, media timeout,
CDR), with no callee leg."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway import logs
from gateway.calls import reception
from gateway.calls.actions import ICE_TIMEOUT, Connect
from gateway.calls.answering import answer_caller
from gateway.calls.call import Call
from gateway.calls.context import Context
from gateway.calls.deadlines import Due
from gateway.calls.teardown import fail, hang_up
from gateway.sip.transaction_layer import Event
from sdp.errors import SdpError

if TYPE_CHECKING:
    from gateway.sip.endpoint import Endpoint

log = logs.get(__name__)


def answer(ctx: Context, call: Call, now: float, core: Endpoint) -> list[Event]:
    """The caller's media is ready (its ports taken): answer it, and start the loop or the
    reception's first prompt."""
    assert call.decision.service is not None
    try:
        events = answer_caller(ctx, call, call.media, now, core)
    except SdpError as exc:
        return fail(ctx, call, exc.status_hint, str(exc), now, core)
    if call.reception is None:
        ctx.push(now + call.decision.service.duration_seconds, call, Due.HANG_UP)
    log.info("call_connected", call_id=call.inbound.call_id, leg="in",
             service=call.decision.service.name)
    if call.media.connects:  # ICE toward a Lync caller: prompts start once it completes
        ctx.actions.append(Connect(call.id, call.media, ICE_TIMEOUT))
    if call.reception is not None:
        events += reception.start(ctx, call)
    return events


def over(ctx: Context, call: Call, now: float, core: Endpoint) -> list[Event]:
    assert call.decision.service is not None
    return hang_up(ctx, call, f"test call over after {call.decision.service.duration_seconds}"
                   " s", now, core)
