"""Call control's timers as one heap of deadlines: each leg's session timer, a call's local
180, its media-silence check, the reception's entry and hand-on limits, a meeting's lobby,
its prompt and conference subscription. Sans-I/O: the adapter asks `next()` and calls back
when due.

An entry names its call by id and what it is for (`Due`); the call decides whether it is
still live (a timer that moved on, a call that ended or was heard ringing makes it stale),
so a refresh never has to find and remove its old entry. Stale entries are dropped as they
surface, and the heap is compacted when they dominate it.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections.abc import Callable, Iterator


class Due(enum.Enum):
    CALLER_TIMER = "in"  # the caller leg's session timer: refresh it, or give up
    CALLEE_TIMER = "out"
    RINGING = "ringing"  # a local 180 if the callee has said nothing yet
    MEDIA = "media"  # check whether every stream has been silent for the media timeout
    SETUP = "setup"  # the call is still not answered: give up on it
    HANG_UP = "hang-up"  # a call the node answered itself has run its time
    ENTRY = "entry"  # the reception's caller has not typed (or finished typing) in time
    LOBBY = "lobby"  # a Lync meeting's lobby has held the caller too long
    LOBBY_PROMPT = "lobby-prompt"  # the lobby's "please wait" is due again
    SUBSCRIPTION = "subscription"  # a Lync meeting's conference-info is due a refresh
    LEG = "leg"  # the leg the reception placed for its caller has not answered in time


Entry = tuple[float, int, int, Due]  # (deadline, sequence, call id, what)


class Deadlines:
    def __init__(self, live: Callable[[Entry], bool]) -> None:
        self._heap: list[Entry] = []
        self._seq = itertools.count()
        self._live = live

    def push(self, deadline: float, call_id: int, due: Due, calls: int) -> None:
        """`calls`: how many calls are in progress, to know when stale entries dominate."""
        heap = self._heap
        heapq.heappush(heap, (deadline, next(self._seq), call_id, due))
        if len(heap) > 1024 and len(heap) > 4 * calls:
            heap[:] = [entry for entry in heap if self._live(entry)]
            heapq.heapify(heap)

    def next(self) -> float | None:
        heap = self._heap
        while heap and not self._live(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def due(self, now: float) -> Iterator[Entry]:
        """The live entries due by `now`, earliest first; each is taken off the heap."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if self._live(entry):
                yield entry

    def __len__(self) -> int:
        return len(self._heap)
