"""Admitting a new INVITE: overload limits, then the routing decision, logged and answered
when it is a rejection.

The transaction layer has already sent 100 Trying. A rejected alias is answered 404 with the
decision's reason. `Admission` alone (a node without call control) answers a routed call 501
naming what was decided; `gateway.calls.b2bua.B2bua` holds one and places the call instead.
In-dialog requests for dialogs this node does not have get 481.
"""

from __future__ import annotations

import logging
import re
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway import logs
from gateway.calls.protocol import arriving_protocol
from gateway.calls.settings import CallSettings
from gateway.sip.message import Request, make_response
from gateway.sip.transaction_layer import Event, RequestReceived
from routing.engine import CallContext, Decision

if TYPE_CHECKING:
    from gateway.sip.endpoint import Endpoint

log = logs.get(__name__)
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")
MAX_REASON = 160


class Admission:
    """Decides each new INVITE under `settings`, which a reload replaces: the next call is
    decided under the new config, never one already decided. Alone, it is the node's
    `CallHandler` for INVITE."""

    methods: frozenset[str] = frozenset({"INVITE"})

    def __init__(self, settings: CallSettings) -> None:
        self.settings = settings
        self._recent: deque[float] = deque()  # admission times in the last second
        # Calls in progress on the other live nodes of this node's location, as their last
        # heartbeats said (gateway/cluster): none without a cluster.
        self.elsewhere: Callable[[], int] = lambda: 0

    def on_event(self, event: Event, now: float, core: Endpoint) -> list[Event]:
        if not isinstance(event, RequestReceived):
            return []
        request = event.request
        if request.to.tag is not None:
            return core.respond(request, event.transaction, make_response(request, 481), now)
        return self.answer_decision(event, self.decide(request, registered=False), now, core)

    def next_deadline(self) -> float | None:
        return None  # admission alone keeps no call, so no timer

    def handle_timeout(self, now: float, core: Endpoint) -> list[Event]:
        return []

    def overloaded(self, now: float, active: int) -> str | None:
        """Why a new call is refused under the node's limits (`active` calls in progress),
        or None to take it; a call taken counts toward the rate limit."""
        limits = self.settings.limits
        if limits.max_calls and active >= limits.max_calls:
            return f"call limit reached: {limits.max_calls} calls in progress"
        if limits.cluster_max_calls and active + self.elsewhere() >= limits.cluster_max_calls:
            return (f"cluster call limit reached: {limits.cluster_max_calls} calls in "
                    "progress in this location")
        if limits.max_calls_per_second:
            recent = self._recent
            while recent and now - recent[0] >= 1.0:
                recent.popleft()
            if len(recent) >= limits.max_calls_per_second:
                return f"call rate limit reached: {limits.max_calls_per_second} calls/s"
            recent.append(now)
        return None

    def decide(self, request: Request, *, registered: bool) -> Decision:
        """The routing decision for `request`; `registered`: whether its caller is
        registered here (rules may be for registered devices only)."""
        settings = self.settings
        context = CallContext(protocol=arriving_protocol(request), location=settings.location,
                              registered=registered)
        decision = settings.router.decide(request.uri_text, context)
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
