"""The state every part of call control shares: the calls in progress and how to find them,
the deadline heap, statistics, the actions for the adapter, and the node's identity."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from gateway import logs
from gateway.calls.actions import Action
from gateway.calls.call import Call, CallState, Leg, Role
from gateway.calls.cdr import CallRecord, CdrStore
from gateway.calls.deadlines import Deadlines, Due, Entry
from gateway.calls.pin_guard import PinGuard
from gateway.calls.registrar import Registrar
from gateway.calls.settings import Local
from gateway.calls.stats import CallStats
from gateway.conferencing.lookups import LookupCache
from gateway.resolver.rfc3263 import TargetResolver
from ice.ports import PortAllocator

log = logs.get(__name__)


@dataclass(eq=False)
class Context:
    local: Local
    cdrs: CdrStore | None
    wall_clock: Callable[[], float]
    resolver: TargetResolver
    registrar: Registrar | None = None
    ports: PortAllocator | None = None  # None: media is never anchored here
    calls: dict[int, Call] = field(default_factory=dict)
    by_dialog: dict[tuple[str, str], Call] = field(default_factory=dict)  # (Call-ID, our tag)
    stats: CallStats = field(default_factory=CallStats)
    actions: list[Action] = field(default_factory=list)
    pin_guard: PinGuard = field(default_factory=PinGuard)  # across reloads, as attackers are
    lookups: LookupCache = field(default_factory=LookupCache)  # Conference IDs, briefly
    deadlines: Deadlines = field(init=False)

    def __post_init__(self) -> None:
        self.deadlines = Deadlines(self._live)

    def push(self, deadline: float, call: Call, due: Due) -> None:
        self.deadlines.push(deadline, call.id, due, len(self.calls))

    def timer_due(self, call: Call, leg: Leg) -> None:
        """(Re)arm `leg`'s session timer on the heap, or forget it when it has none."""
        if leg.timer is not None:
            self.push(leg.timer.deadline(), call, TIMER_DUE[leg.role])

    def media_due(self, call: Call, now: float) -> None:
        """The next media-silence check, once the call's media flows through the node."""
        media = call.media.relayed
        interval = media.check_interval if media is not None else None
        if interval is not None:
            self.push(now + interval, call, Due.MEDIA)

    def _live(self, entry: Entry) -> bool:
        deadline, _, call_id, due = entry
        call = self.calls.get(call_id)
        if call is None:
            return False
        if due is Due.RINGING:
            return call.state in (CallState.RESOLVING, CallState.CALLING) and (
                not call.provisional_sent)
        if due is Due.SETUP:
            return call.state in (CallState.RESOLVING, CallState.CALLING, CallState.EARLY)
        if due is Due.LOBBY:
            return call.meeting is not None and call.meeting.lobby_since is not None and (
                call.meeting.lobby_until == deadline) and call.state is not CallState.ENDED
        if due is Due.LOBBY_PROMPT:
            return call.meeting is not None and call.meeting.prompt_at == deadline and (
                call.state is CallState.CONNECTED)
        if due is Due.SUBSCRIPTION:
            return call.meeting is not None and call.meeting.refresh_at == deadline and (
                call.state is not CallState.ENDED)
        if call.state is not CallState.CONNECTED:
            return False
        if due in (Due.MEDIA, Due.HANG_UP):
            return True
        if due is Due.ENTRY:
            return call.reception is not None and call.reception.entry_until == deadline
        if due is Due.LEG:  # the reception's own leg, or the MCU's behind a lobby prompt
            owner = call.reception if call.reception is not None else call.meeting
            return call.handing_on and owner is not None and owner.leg_until == deadline
        timer = call.leg(TIMER_ROLE[due]).timer
        return timer is not None and timer.deadline() == deadline

    def record(self, record: CallRecord,
               step: Literal["open", "update", "write"] = "write") -> None:
        """A CDR step: "open" (admitted), "update" (answered) or "write" (ended); a store
        that fails must not take calls down with it."""
        if self.cdrs is None:
            return
        try:
            getattr(self.cdrs, step)(record)
        except Exception as exc:
            log.error("cdr_write_failed", call_id=record.in_call_id, step=step, error=str(exc))


TIMER_DUE = {Role.CALLER: Due.CALLER_TIMER, Role.CALLEE: Due.CALLEE_TIMER}
TIMER_ROLE = {due: role for role, due in TIMER_DUE.items()}
