"""The subscription table on its own: expiry order with refreshes and removals in between,
the heap kept bounded, the caps' accounting."""

from __future__ import annotations

from gateway.presence.subscriptions import Limits, Subscription, Subscriptions
from gateway.transport.peer import Peer, Transport


def sub(n: int, host: str = "192.0.2.1", expires_at: float = 100.0) -> Subscription:
    return Subscription(f"call-{n}", f"tag-{n}", "r", "<sip:a@b>;tag=x", "<sip:c@d>;tag=r",
                        "sip:c@192.0.2.1", (), 0, 1, Peer(Transport.UDP, host, 5060),
                        ("sip:a@b",), "", "application/pidf+xml", False, expires_at)


def test_expiry_follows_refreshes_and_removals() -> None:
    table = Subscriptions()
    a, b, c = sub(1, expires_at=10.0), sub(2, expires_at=20.0), sub(3, expires_at=30.0)
    for s in (a, b, c):
        table.add(s)
    table.refresh(a, 40.0)
    table.remove(b.key)
    assert table.next_deadline() == 30.0
    assert table.expired(35.0) == [c]
    assert table.next_deadline() == 40.0
    assert table.expired(40.0) == [a]
    assert table.next_deadline() is None and len(table) == 0


def test_refreshes_do_not_grow_the_heap_without_bound() -> None:
    table = Subscriptions()
    held = [sub(n) for n in range(10)]
    for s in held:
        table.add(s)
    for step in range(10_000):
        table.refresh(held[step % 10], 100.0 + step)
    assert len(table._heap) <= 2 * len(table) + 64
    assert table.next_deadline() == 100.0 + 9_990


def test_caps_count_per_source_and_free_on_removal() -> None:
    table = Subscriptions(Limits(max_total=3, max_per_source=2))
    table.add(sub(1, "192.0.2.1"))
    table.add(sub(2, "192.0.2.1"))
    assert table.refused("192.0.2.1") == "2 subscriptions from 192.0.2.1"
    assert table.refused("192.0.2.2") is None
    table.add(sub(3, "192.0.2.2"))
    assert table.refused("192.0.2.3") == "3 subscriptions held"
    table.remove(("call-1", "tag-1"))
    assert table.refused("192.0.2.1") is None
    assert table.sources() == {"192.0.2.1": 1, "192.0.2.2": 1}
    table.remove(("call-1", "tag-1"))  # twice: nothing more to free
    assert table.sources() == {"192.0.2.1": 1, "192.0.2.2": 1}
