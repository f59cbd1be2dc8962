"""Call statistics: what `/metrics` and the status API read, kept by call control as calls
end and read as a snapshot, so readers never reach into call control's own records."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from gateway.media.call import CallMedia

Counters = dict[str, dict[str, dict[str, object]]]  # CallMedia.counters()
MEDIA_KEYS = ("packets", "bytes", "lost", "dropped")


@dataclass(frozen=True, slots=True)
class Statistics:
    active: int  # calls in progress
    outcomes: dict[tuple[str, str], int]  # ended calls by (outcome, routing decision)
    ice: dict[str, int]  # ICE toward Lync by outcome: connected, failed
    ended_media: dict[str, int]  # relay totals of ended calls (MEDIA_KEYS)
    live_media: dict[str, int]  # the same so far on calls in progress
    stuck: int  # calls ended because their set-up never finished


@dataclass(slots=True)
class CallStats:
    outcomes: dict[tuple[str, str], int] = field(default_factory=dict)
    ice: dict[str, int] = field(default_factory=lambda: {"connected": 0, "failed": 0})
    media: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MEDIA_KEYS, 0))
    stuck: int = 0  # calls whose set-up never finished (a bug), ended by their deadline

    def ended(self, outcome: str, decision: str) -> None:
        key = (outcome, decision)
        self.outcomes[key] = self.outcomes.get(key, 0) + 1

    def ice_outcome(self, connected: bool) -> None:
        self.ice["connected" if connected else "failed"] += 1

    def media_ended(self, counters: Counters) -> None:
        add(self.media, counters)

    def snapshot(self, active: int, live: Iterable[CallMedia]) -> Statistics:
        """`live`: the media of the calls in progress that have any."""
        so_far = dict.fromkeys(MEDIA_KEYS, 0)
        for media in live:
            add(so_far, media.counters())
        return Statistics(active, dict(self.outcomes), dict(self.ice), dict(self.media),
                          so_far, self.stuck)


def add(totals: dict[str, int], counters: Counters) -> None:
    """A call's media counters added into `totals`."""
    for by_direction in counters.values():
        for stats in by_direction.values():
            for key in ("packets", "bytes", "lost"):
                totals[key] += int(str(stats[key]))
            dropped = stats["dropped"]
            assert isinstance(dropped, dict)
            totals["dropped"] += sum(dropped.values())
