"""Conference ID look-ups remembered briefly, per Lync server: a room system that redials
within a minute, or a reception caller who retries a number, costs no second SERVICE.
Answers are kept a short while because meetings end and IDs are reassigned: a found focus
for `FOUND_SECONDS`, a "no such meeting" for less (`MISSING_SECONDS`) so a meeting
scheduled just now becomes joinable quickly. Time comes in as an argument."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

FOUND_SECONDS = 60.0
MISSING_SECONDS = 10.0
# every distinct ID tried costs an entry; an ID-guessing caller must not grow it without end
MAX_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class Answer:
    focus: str  # "" when the server said there is no such meeting
    reason: str  # the server's reason when there is none
    until: float


class LookupCache:
    def __init__(self) -> None:
        self._answers: OrderedDict[tuple[str, str], Answer] = OrderedDict()

    def get(self, server: str, conference_id: str, now: float) -> Answer | None:
        key = (server, conference_id)
        answer = self._answers.get(key)
        if answer is None:
            return None
        if answer.until <= now:
            del self._answers[key]
            return None
        return answer

    def found(self, server: str, conference_id: str, focus: str, now: float) -> None:
        self._put((server, conference_id), Answer(focus, "", now + FOUND_SECONDS))

    def missing(self, server: str, conference_id: str, reason: str, now: float) -> None:
        self._put((server, conference_id), Answer("", reason, now + MISSING_SECONDS))

    def _put(self, key: tuple[str, str], answer: Answer) -> None:
        self._answers[key] = answer
        self._answers.move_to_end(key)
        while len(self._answers) > MAX_ENTRIES:
            self._answers.popitem(last=False)

    def __len__(self) -> int:
        return len(self._answers)
