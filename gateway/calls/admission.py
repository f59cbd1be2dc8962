"""Admitting a new INVITE: the routing decision, logged and answered.

The transaction layer has already sent 100 Trying. A rejected alias is answered 404 with the
decision's reason; a routed call needs the other leg, which this build cannot place yet
(the B2BUA, issue 7), so it is answered 501 naming what was decided instead of being left
to ring or faked. In-dialog requests for dialogs this node does not have get 481.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway import logs
from gateway.calls.protocol import arriving_protocol
from gateway.sip.message import Response, make_response
from gateway.sip.transactions import Event, RequestReceived
from routing.engine import CallContext, Decision, Router

if TYPE_CHECKING:
    from gateway.sip.endpoint import Endpoint

log = logs.get(__name__)
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")
MAX_REASON = 160


@dataclass(frozen=True, slots=True)
class Admission:
    """The `CallHandler` for INVITE. `router` is read per call, so a reload that swaps the
    router applies to the next call and never to one already decided."""

    router: Callable[[], Router]
    location: Callable[[], str]
    methods: frozenset[str] = frozenset({"INVITE"})

    def on_event(self, event: Event, now: float, core: Endpoint) -> list[Event]:
        if not isinstance(event, RequestReceived):
            return []
        request = event.request
        if request.to.tag is not None:
            return core.respond(request, event.transaction, make_response(request, 481), now)
        context = CallContext(protocol=arriving_protocol(request), location=self.location())
        decision = self.router().decide(request.uri_text, context)
        call = log.bind(call_id=request.call_id, leg="in", protocol=context.protocol,
                        alias=request.uri_text)
        if decision.rule is not None:
            call = call.bind(rule=decision.rule.name)
        elif decision.service is not None:
            call = call.bind(service=decision.service.name)
        call.info("call_routed" if decision.routed else "call_rejected",
                  outcome=decision.outcome, destination=decision.destination,
                  reason=decision.reason)
        response = _answer(decision, request_tag=core.new_tag(), request=event)
        return core.respond(request, event.transaction, response, now)


def _answer(decision: Decision, request_tag: str, request: RequestReceived) -> Response:
    if not decision.routed:
        return make_response(request.request, 404, _reason("Not Found", decision.reason),
                             to_tag=request_tag)
    if decision.rule is not None:
        what = (f"rule {decision.rule.name!r} routes to {decision.destination} "
                f"({decision.rule.target})")
    else:
        assert decision.service is not None
        what = f"{decision.service.type} {decision.service.name!r}"
    return make_response(
        request.request, 501,
        _reason("Not Implemented", f"{what}; placing the call is not built yet"),
        to_tag=request_tag,
    )


def _reason(phrase: str, detail: str) -> str:
    """A reason phrase that says why, with caller-controlled text made safe for a start line."""
    text = f"{phrase} ({_UNPRINTABLE.sub('?', detail)})"
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 4] + "...)"
