"""Brute-force resistance for PINs (the guide's "Virtual Reception / IVR brute force break-in
resistance"): wrong PINs are counted per source address; `attempts` of them within `window`
seconds lock that address out for `lockout` seconds. Per address, so one attacker locks out
nobody else; kept by call control across reloads (a reload must not reset an attacker's
count), with the policy read from each call's settings."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_SOURCES = 100_000  # addresses remembered at once: a flood of sources cannot grow it further


@dataclass(frozen=True, slots=True)
class PinPolicy:
    attempts: int = 5
    window: float = 600.0
    lockout: float = 600.0


@dataclass(slots=True)
class PinGuard:
    failures: dict[str, deque[float]] = field(default_factory=dict)
    locked: dict[str, float] = field(default_factory=dict)  # source -> locked until
    # Told of each wrong PIN counted here, so the other nodes of a cluster count it too
    # (gateway/cluster): an attacker rotating nodes gets no more tries than on one.
    on_failed: Callable[[str], None] | None = None

    def locked_for(self, source: str, now: float) -> float | None:
        """Seconds `source` is still locked out for, or None."""
        until = self.locked.get(source)
        if until is None:
            return None
        if until <= now:
            del self.locked[source]
            return None
        return until - now

    def failed(self, source: str, now: float, policy: PinPolicy) -> bool:
        """A wrong PIN from `source`; True when it locks the source out."""
        if self.on_failed is not None:
            self.on_failed(source)
        return self.counted(source, now, policy)

    def counted(self, source: str, now: float, policy: PinPolicy) -> bool:
        """A wrong PIN from `source` counted, wherever it was dialled (a cluster's other
        nodes report theirs here); True when it locks the source out."""
        seen = self.failures.get(source)
        if seen is None:
            if len(self.failures) >= MAX_SOURCES:
                self._forget(now, policy)
                if len(self.failures) >= MAX_SOURCES:  # all recent: the oldest goes
                    del self.failures[next(iter(self.failures))]
            seen = self.failures[source] = deque()
        seen.append(now)
        while seen and now - seen[0] > policy.window:
            seen.popleft()
        if len(seen) < policy.attempts:
            return False
        del self.failures[source]
        self.locked[source] = now + policy.lockout
        return True

    def _forget(self, now: float, policy: PinPolicy) -> None:
        """Sources whose last failure is older than the window count for nothing."""
        for source in [s for s, seen in self.failures.items()
                       if not seen or now - seen[-1] > policy.window]:
            del self.failures[source]
