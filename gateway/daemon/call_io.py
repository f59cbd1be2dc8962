"""The asyncio side of call control: carries out the actions the B2BUA asks for (media
resources, DNS, ICE, closing) and feeds each outcome back into it, as aioquic's
`asyncio/protocol.py` does for its connection. Used by the node, and by tests that drive
call control without sockets for SIP."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from gateway import logs
from gateway.calls.actions import (
    Action,
    AddStreams,
    Connect,
    Play,
    Prepare,
    Silence,
    StopStreams,
)
from gateway.calls.b2bua import B2bua
from gateway.resolver.rfc3263 import Target, TargetResolver
from gateway.sip.endpoint import Endpoint
from gateway.sip.transaction_layer import Event

log = logs.get(__name__)
Spawn = Callable[[Coroutine[Any, Any, None]], None]
Deliver = Callable[[list[Event]], None]  # send what the core returned (and re-arm its timer)


class CallIo:
    def __init__(self, calls: B2bua, core: Endpoint, resolver: TargetResolver, *,
                 spawn: Spawn, deliver: Deliver, clock: Callable[[], float]) -> None:
        self.calls = calls
        self.core = core
        self.resolver = resolver
        self.spawn = spawn
        self.deliver = deliver
        self.clock = clock
        self._running = False

    def run(self) -> None:
        """Carry out every action call control has asked for so far, in order (an outcome
        fed back meanwhile adds its own to the end)."""
        if self._running:
            return
        self._running = True
        try:
            while actions := self.calls.take_actions():
                for action in actions:
                    self._carry_out(action)
        finally:
            self._running = False

    def _carry_out(self, action: Action) -> None:
        if isinstance(action, Prepare):
            self._prepare(action)
        elif isinstance(action, Connect):
            self.spawn(self._connect(action))
        elif isinstance(action, AddStreams):
            self.spawn(self._add_streams(action))
        elif isinstance(action, Play):
            self._play(action)
        elif isinstance(action, Silence):
            action.media.silence()
        else:
            rest = (action.media.stop_streams(action.kinds, action.why)
                    if isinstance(action, StopStreams) else action.media.close())
            if rest is not None:
                self.spawn(rest)

    def _play(self, action: Play) -> None:
        call_id = action.call_id
        if action.listen:
            action.media.listen(lambda key: self._feed(
                lambda now: self.calls.digit(call_id, key, now, self.core)))
        action.media.play(action.prompts, lambda: self._feed(
            lambda now: self.calls.played(call_id, now, self.core)))

    def _prepare(self, action: Prepare) -> None:
        error: BaseException | None = None
        try:
            action.media.reserve()
        except Exception as exc:
            error = exc
        if error is None and (action.resolve is not None or action.media.gathers):
            self.spawn(self._wait_and_prepare(action))
            return
        # Nothing to wait for (a registered device, a numeric address, anchored SIP media),
        # or nothing to wait for any more: placed (or refused) at once, while the INVITE is
        # still being handled.
        self._feed(lambda now: self.calls.prepared(action.call_id, None, error, now,
                                                   self.core))

    async def _wait_and_prepare(self, action: Prepare) -> None:
        targets: list[Target] | None = None
        error: BaseException | None = None
        try:
            if action.resolve is not None:
                targets = await self.resolver.resolve(action.resolve,
                                                      federation=action.federation)
            await action.media.prepare()
        except Exception as exc:
            error = exc
        self._feed(lambda now: self.calls.prepared(action.call_id, targets, error, now,
                                                   self.core))

    async def _connect(self, action: Connect) -> None:
        error: BaseException | None = None
        try:
            await action.media.connect(action.timeout)
        except Exception as exc:
            error = exc
        self._feed(lambda now: self.calls.media_connected(action.call_id, error, now,
                                                          self.core))

    async def _add_streams(self, action: AddStreams) -> None:
        error: BaseException | None = None
        try:
            if action.timeout is None:
                await action.media.prepare_added()
            else:
                await action.media.connect_added(action.timeout)
        except Exception as exc:
            error = exc
        connecting = action.timeout is not None
        self._feed(lambda now: self.calls.streams_added(action.call_id, connecting, error, now,
                                                        self.core))

    def _feed(self, make: Callable[[float], list[Event]]) -> None:
        """An outcome into the core; what it returns goes out, and what it asks is done."""
        try:
            events = make(self.clock())
        except Exception:
            log.exception("call_step_crashed")
            events = []
        self.deliver(events)
        self.run()
