"""All the relayed streams of one call, and the media timeout that ends a call nobody is
sending anything on any more."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from gateway import logs
from gateway.media.relay import StreamRelay

log = logs.get(__name__)


class CallMedia:
    def __init__(
        self,
        streams: list[StreamRelay],
        *,
        timeout: float,
        on_timeout: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.streams = streams
        self.timeout = timeout  # 0: never
        self.on_timeout = on_timeout
        self.clock = clock
        self._timer: asyncio.TimerHandle | None = None

    def expired(self, now: float) -> str | None:
        """The reason to end the call, when every stream has been silent too long."""
        if not self.timeout or not self.streams:
            return None
        silent = {s.media: s.silent_for(now) for s in self.streams}
        if all(quiet >= self.timeout for quiet in silent.values()):
            detail = ", ".join(f"{media} {quiet:.0f} s" for media, quiet in silent.items())
            return f"media timeout: no packets for {self.timeout:g} s ({detail})"
        return None

    def start(self) -> None:
        if self.timeout:
            self._schedule()

    def _schedule(self) -> None:
        interval = max(0.05, min(self.timeout / 4, 5.0))
        self._timer = asyncio.get_running_loop().call_later(interval, self._tick)

    def _tick(self) -> None:
        reason = self.expired(self.clock())
        if reason is not None:
            self._timer = None
            log.warning("media_timeout", reason=reason)
            self.on_timeout(reason)
            return
        self._schedule()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def counters(self) -> dict[str, dict[str, dict[str, object]]]:
        """{media: {"lync->sip": {...}, "sip->lync": {...}}} for the CDR and status API."""
        return {s.media: {f"{a}->{b}": st.as_dict() for (a, b), st in s.stats.items()}
                for s in self.streams}
