"""The node's headroom, measured for overload control (`gateway.sip.overload`): every
`Policy.interval` the sampler notes how late the loop ran it (its lag), how full the SIP
receive buffers are, and how much CPU the loop's thread used, and hands that to the core.
It logs when shedding starts and when it ends, with how much was shed, and nothing per
request: a node shedding load has no time for a log line per refusal."""

from __future__ import annotations

import asyncio
import time

from gateway import logs
from gateway.sip.overload import Observation, OverloadControl
from gateway.transport.layer import TransportLayer

log = logs.get(__name__)


class Headroom:
    def __init__(self, control: OverloadControl, transport: TransportLayer,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.control = control
        self.transport = transport
        self.loop = loop
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._cpu = 0.0
        self._shed_before = 0

    def start(self) -> None:
        self._cpu = time.thread_time()
        self._schedule(self.loop.time())

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _schedule(self, now: float) -> None:
        self._due = now + self.control.policy.interval
        self._timer = self.loop.call_at(self._due, self._sample)

    def _sample(self) -> None:
        now = self.loop.time()
        cpu = time.thread_time()
        interval = self.control.policy.interval
        seen = Observation(lag=max(0.0, now - self._due),
                           queue=self.transport.receive_queues().fill,
                           cpu=(cpu - self._cpu) / (interval + max(0.0, now - self._due)))
        self._cpu = cpu
        was = self.control.shedding
        self.control.observe(now, seen)
        if self.control.shedding and not was:
            self._shed_before = sum(self.control.shed.values())
            log.warning("overload_shedding", reason=self.control.reason,
                        share=round(self.control.share, 3), lag_ms=round(seen.lag * 1000, 1),
                        queue=round(seen.queue, 3), cpu=round(seen.cpu, 3))
        elif was and not self.control.shedding:
            log.warning("overload_ended",
                        shed=sum(self.control.shed.values()) - self._shed_before)
        self._schedule(now)
