"""Relay metrics keep Prometheus' rules: a counter never falls. RFC 3550's loss count of a
stream in progress falls when a late packet arrives, so it is a gauge until the call ends;
drops count at once."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import CollectorRegistry

from gateway.api.metrics import NodeCollector, render
from tests.kit.calls import (
    FIRST,
    Harness,
)
from tests.kit.nodes import metric


def scrape(node: object) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node))  # type: ignore[arg-type]
    return render(registry).decode()


def test_loss_on_calls_in_progress_is_a_gauge_and_the_counter_only_grows() -> None:
    h = Harness([FIRST])
    stats: dict[str, object] = {"packets": 10, "bytes": 1720, "lost": 3,
                                "dropped": {"short": 2}}
    relayed = SimpleNamespace(counters=lambda: {"audio": {"in": stats}})
    h.b2bua.calls[1] = SimpleNamespace(  # type: ignore[assignment]
        media=SimpleNamespace(relayed=relayed))
    node = SimpleNamespace(endpoint=h.ep, calls=h.b2bua, generation=1, transport=SimpleNamespace(
        stats=SimpleNamespace(tls_handshakes=0, tls_failures={}), connection_count=0))
    first = scrape(node)
    assert metric(first, "lyncgate_relay_packets_lost_in_progress") == 3
    assert metric(first, "lyncgate_relay_packets_lost_total") == 0
    assert metric(first, "lyncgate_relay_packets_dropped_total") == 2
    stats["lost"] = 1  # two late packets filled the gaps
    assert metric(scrape(node), "lyncgate_relay_packets_lost_in_progress") == 1
    h.b2bua.calls.clear()  # the call ended: its final counts join the totals
    h.b2bua.ctx.stats.media_ended({"audio": {"in": stats}})
    last = scrape(node)
    assert metric(last, "lyncgate_relay_packets_lost_total") == 1
    assert metric(last, "lyncgate_relay_packets_dropped_total") == 2
    assert metric(last, "lyncgate_relay_packets_total") == 10


def test_internal_errors_the_endpoint_counted_are_exported() -> None:
    """A bug met while handling a message is counted by the endpoint, which keeps serving;
    operators see the count in /metrics."""
    h = Harness([FIRST])
    node = SimpleNamespace(endpoint=h.ep, calls=h.b2bua, generation=1, transport=SimpleNamespace(
        stats=SimpleNamespace(tls_handshakes=0, tls_failures={}), connection_count=0))
    assert metric(scrape(node), "lyncgate_sip_internal_errors_total") == 0
    h.ep.counters["internal_errors"] = 2
    assert metric(scrape(node), "lyncgate_sip_internal_errors_total") == 2
