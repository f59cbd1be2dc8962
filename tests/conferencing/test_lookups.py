"""Conference ID answers are remembered per Lync server for a short while: found focus
URIs longer than 'no such meeting', expired entries forgotten, and the table bounded so an
ID-guessing caller cannot grow it."""

from __future__ import annotations

from gateway.conferencing import lookups
from gateway.conferencing.lookups import LookupCache


def test_found_and_missing_expire_at_their_own_times() -> None:
    cache = LookupCache()
    cache.found("pool", "1234", "sip:focus", now=100.0)
    cache.missing("pool", "9999", "conferenceDoesNotExist", now=100.0)
    assert cache.get("pool", "1234", 100.0 + lookups.FOUND_SECONDS - 1).focus == "sip:focus"  # type: ignore[union-attr]
    assert cache.get("other-pool", "1234", 101.0) is None  # per server
    assert cache.get("pool", "9999", 100.0 + lookups.MISSING_SECONDS - 1) is not None
    assert cache.get("pool", "9999", 100.0 + lookups.MISSING_SECONDS) is None
    assert cache.get("pool", "1234", 100.0 + lookups.FOUND_SECONDS) is None
    assert len(cache) == 0


def test_the_table_is_bounded_oldest_first() -> None:
    cache = LookupCache()
    for i in range(lookups.MAX_ENTRIES + 5):
        cache.missing("pool", str(i), "x", now=0.0)
    assert len(cache) == lookups.MAX_ENTRIES
    assert cache.get("pool", "0", 1.0) is None
    assert cache.get("pool", str(lookups.MAX_ENTRIES + 4), 1.0) is not None
