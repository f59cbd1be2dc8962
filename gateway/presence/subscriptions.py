"""The subscription table: who is subscribed to what, until when, with caps.

A subscription is the dialog a SUBSCRIBE set up (RFC 6665), held as the few strings a NOTIFY
in it needs rather than as a `Dialog` with parsed addresses: the table holds tens of thousands
(one per Lync contact list entry, or per batch), and each must stay under 2 kB
(bench/presence.py). Expiry is a heap whose stale entries (refreshed or removed
subscriptions) are skipped, so the per-message `next_deadline()` stays O(1).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from dataclasses import dataclass

from gateway.transport.peer import Peer

Key = tuple[str, str]  # (Call-ID, our tag)


@dataclass(frozen=True, slots=True)
class Limits:
    # A Lync pool is one source for all of its users' subscriptions: the per-source cap
    # is for a single misbehaving client or a flood from one address, not for pools.
    max_total: int = 50_000
    max_per_source: int = 20_000
    retry_after: int = 30  # seconds, on the 503 beyond a cap
    min_expires: int = 60  # shorter gets 423 with Min-Expires (RFC 6665 4.1.2.1)
    max_expires: int = 3600  # longer is granted this
    default_expires: int = 3600  # no Expires: RFC 3856 6.4's default for presence


@dataclass(slots=True, eq=False)
class Subscription:
    call_id: str
    local_tag: str
    remote_tag: str
    local: str  # our From in NOTIFYs: the SUBSCRIBE's To, tagged
    remote: str  # our To in NOTIFYs: the SUBSCRIBE's From, as written
    remote_target: str  # the subscriber's Contact
    route_set: tuple[str, ...]
    local_cseq: int
    remote_cseq: int
    peer: Peer
    resources: tuple[str, ...]  # the presentities, as the subscriber named them
    list_uri: str  # a batch's own URI (the Request-URI), "" for a single resource
    fmt: str  # the document format (gateway.presence.documents)
    piggyback: bool  # documents go in the 200 to a SUBSCRIBE ([MS-SIP] 3.4.5.1)
    expires_at: float
    signature: int = 0  # of the answers last sent, to tell whether a reload changed them
    event: str = "presence"  # the Event header of our NOTIFYs (with the SUBSCRIBE's id)

    @property
    def key(self) -> Key:
        return (self.call_id, self.local_tag)

    @property
    def source(self) -> str:
        return self.peer.host


class Subscriptions:
    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._by_key: dict[Key, Subscription] = {}
        self._per_source: dict[str, int] = {}
        self._heap: list[tuple[float, int, Key]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._by_key)

    def __iter__(self) -> Iterator[Subscription]:
        # a copy: sending a NOTIFY can drop the subscription being iterated over
        return iter(list(self._by_key.values()))

    def get(self, key: Key) -> Subscription | None:
        return self._by_key.get(key)

    def refused(self, source: str) -> str | None:
        """Why a new subscription from `source` is refused now, or None."""
        if len(self._by_key) >= self.limits.max_total:
            return f"{self.limits.max_total} subscriptions held"
        if self._per_source.get(source, 0) >= self.limits.max_per_source:
            return f"{self.limits.max_per_source} subscriptions from {source}"
        return None

    def add(self, sub: Subscription) -> None:
        self._by_key[sub.key] = sub
        self._per_source[sub.source] = self._per_source.get(sub.source, 0) + 1
        self._push(sub)

    def refresh(self, sub: Subscription, expires_at: float) -> None:
        sub.expires_at = expires_at
        self._push(sub)

    def remove(self, key: Key) -> Subscription | None:
        sub = self._by_key.pop(key, None)
        if sub is None:
            return None
        left = self._per_source[sub.source] - 1
        if left:
            self._per_source[sub.source] = left
        else:
            del self._per_source[sub.source]
        if not self._by_key:
            self._heap.clear()
        return sub

    def expired(self, now: float) -> list[Subscription]:
        """The subscriptions whose time is up, taken out of the table."""
        heap, out = self._heap, []
        while heap and heap[0][0] <= now:
            at, _, key = heapq.heappop(heap)
            sub = self._by_key.get(key)
            if sub is not None and sub.expires_at == at:
                self.remove(key)
                out.append(sub)
        return out

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap:
            at, _, key = heap[0]
            sub = self._by_key.get(key)
            if sub is not None and sub.expires_at == at:
                return at
            heapq.heappop(heap)  # stale: refreshed or removed since
        return None

    def sources(self) -> dict[str, int]:
        return dict(self._per_source)

    def _push(self, sub: Subscription) -> None:
        heap = self._heap
        heapq.heappush(heap, (sub.expires_at, next(self._seq), sub.key))
        if len(heap) > 2 * len(self._by_key) + 64:
            # Refreshes leave stale entries behind; rebuilt before they outnumber the live.
            self._heap = [(s.expires_at, next(self._seq), s.key) for s in self._by_key.values()]
            heapq.heapify(self._heap)
