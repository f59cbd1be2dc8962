"""Admitting a new INVITE: the routing decision, logged and answered when it is a rejection.

The transaction layer has already sent 100 Trying. A rejected alias is answered 404 with the
decision's reason. `Admission` alone (no B2BUA) answers a routed call 501 naming what was
decided; `gateway.calls.b2bua.B2bua` places the call instead. In-dialog requests for dialogs
this node does not have get 481.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway import logs
from gateway.calls.protocol import arriving_protocol
from gateway.sip.message import Request, make_response
from gateway.sip.transaction_layer import Event, RequestReceived
from routing.engine import CallContext, Decision, Router

if TYPE_CHECKING:
    from gateway.sip.endpoint import Endpoint

log = logs.get(__name__)
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")
MAX_REASON = 160


class Admission:
    """The `CallHandler` for INVITE. `router` is read per call, so a reload that swaps the
    router applies to the next call and never to one already decided."""

    methods: frozenset[str] = frozenset({"INVITE"})

    def __init__(self, *, router: Callable[[], Router], location: Callable[[], str]) -> None:
        self.router = router
        self.location = location

    def on_event(self, event: Event, now: float, core: Endpoint) -> list[Event]:
        if not isinstance(event, RequestReceived):
            return []
        request = event.request
        if request.to.tag is not None:
            return core.respond(request, event.transaction, make_response(request, 481), now)
        return self.answer_decision(event, self.decide(request), now, core)

    def next_deadline(self) -> float | None:
        return None  # admission alone keeps no call, so no timer

    def handle_timeout(self, now: float, core: Endpoint) -> list[Event]:
        return []

    def caller_registered(self, request: Request) -> bool:
        """Whether the caller is registered here (rules may be for registered devices only);
        without a registrar, nobody is."""
        return False

    def decide(self, request: Request) -> Decision:
        context = CallContext(protocol=arriving_protocol(request), location=self.location(),
                              registered=self.caller_registered(request))
        decision = self.router().decide(request.uri_text, context)
        if not log.is_enabled_for(logging.INFO):
            return decision  # binding first would cost more than the decision
        call = log.bind(call_id=request.call_id, leg="in", protocol=context.protocol,
                        alias=request.uri_text)
        if decision.rule is not None:
            call = call.bind(rule=decision.rule.name)
        elif decision.service is not None:
            call = call.bind(service=decision.service.name)
        call.info("call_routed" if decision.routed else "call_rejected",
                  outcome=decision.outcome, destination=decision.destination,
                  reason=decision.reason)
        return decision

    def answer_decision(self, event: RequestReceived, decision: Decision, now: float,
                        core: Endpoint) -> list[Event]:
        request = event.request
        if not decision.routed:
            response = make_response(request, 404, reason_phrase("Not Found", decision.reason),
                                     to_tag=core.new_tag())
        else:
            if decision.rule is not None:
                what = (f"rule {decision.rule.name!r} routes to {decision.destination} "
                        f"({decision.rule.target})")
            else:
                assert decision.service is not None
                what = f"{decision.service.type} {decision.service.name!r}"
            response = make_response(
                request, 501,
                reason_phrase("Not Implemented", f"{what}; placing the call is not built yet"),
                to_tag=core.new_tag(),
            )
        return core.respond(request, event.transaction, response, now)


def reason_phrase(phrase: str, detail: str) -> str:
    """A reason phrase that says why, with caller-controlled text made safe for a start line."""
    text = f"{phrase} ({_UNPRINTABLE.sub('?', detail)})"
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 4] + "...)"
