"""Prometheus metrics read live from the node at each scrape (no second bookkeeping):
SIP messages, parse errors, transaction timeouts, TLS, calls, media, and the process."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from gateway.daemon.node import Node

# endpoint counter prefix -> (metric, help, label)
_SIP = {
    "requests_in": ("lyncgate_sip_requests_received", "SIP requests received", "method"),
    "requests_out": ("lyncgate_sip_requests_sent", "SIP requests sent", "method"),
    "responses_out": ("lyncgate_sip_responses_sent", "SIP responses sent", "status"),
    "responses_in": ("lyncgate_sip_responses_received", "SIP responses received", "status"),
    "parse_errors": ("lyncgate_sip_parse_errors", "Messages refused as malformed, by the "
                     "status answered", "status"),
    "transaction_timeouts": ("lyncgate_sip_transaction_timeouts", "Transactions that timed "
                             "out, by RFC 3261 timer", "timer"),
}


class NodeCollector(Collector):
    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        node = self.node
        families = {prefix: CounterMetricFamily(name, text, labels=[label])
                    for prefix, (name, text, label) in _SIP.items()}
        for key, value in node.endpoint.counters.items():
            prefix, _, label = key.partition(":")
            if prefix in families:
                families[prefix].add_metric([label], value)
        yield from families.values()
        overload = node.endpoint.overload
        shed = CounterMetricFamily("lyncgate_sip_shed", "New dialogs (INVITE, REGISTER, "
                                   "SUBSCRIBE) refused 503 by overload control, by the signal "
                                   "over its target", labels=["reason"])
        for reason, count in overload.shed.items():
            shed.add_metric([reason], count)
        yield shed
        yield GaugeMetricFamily("lyncgate_overload_admitted_share", "Share of new dialogs "
                                "overload control admits (1: no shedding)", value=overload.share)
        yield CounterMetricFamily("lyncgate_sip_internal_errors", "Exceptions met while "
                                  "handling a message (bugs): logged, answered 500 where a "
                                  "request waited, and the node kept serving",
                                  value=node.endpoint.counters.get("internal_errors", 0))
        stats = node.transport.stats
        yield CounterMetricFamily("lyncgate_tls_handshakes", "TLS handshakes completed",
                                  value=stats.tls_handshakes)
        failures = CounterMetricFamily("lyncgate_tls_handshake_failures",
                                       "TLS handshakes that failed, by reason",
                                       labels=["reason"])
        for reason, count in stats.tls_failures.items():
            failures.add_metric([reason], count)
        yield failures
        yield GaugeMetricFamily("lyncgate_connections", "Open TCP/TLS connections",
                                value=node.transport.connection_count)
        yield GaugeMetricFamily("lyncgate_config_generation", "Config reloads applied + 1",
                                value=node.generation)
        presence = node.calls.presence
        if presence is not None:
            yield GaugeMetricFamily("lyncgate_presence_subscriptions", "Presence "
                                    "subscriptions held", value=len(presence.table))
            happened = CounterMetricFamily(
                "lyncgate_presence_events", "Presence subscriptions by what happened to them "
                "(subscribed, refreshed, unsubscribed, expired, dropped, refused_full, "
                "bad_event, notify_sent, ...)", labels=["event"])
            for event, count in presence.counters.items():
                happened.add_metric([event], count)
            yield happened
        calls = node.calls.statistics()
        yield GaugeMetricFamily("lyncgate_calls_active", "Calls in progress", value=calls.active)
        ended = CounterMetricFamily("lyncgate_calls", "Ended calls by outcome and routing "
                                    "decision", labels=["outcome", "decision"])
        for (outcome, decision), count in calls.outcomes.items():
            ended.add_metric([outcome, decision], count)
        yield ended
        yield CounterMetricFamily("lyncgate_calls_stuck", "Calls whose set-up never "
                                  "finished (a bug), ended by their deadline", value=calls.stuck)
        ice = CounterMetricFamily("lyncgate_ice_outcomes", "ICE toward Lync callers, by "
                                  "outcome", labels=["outcome"])
        for outcome, count in calls.ice.items():
            ice.add_metric([outcome], count)
        yield ice
        done, live = calls.ended_media, calls.live_media
        yield CounterMetricFamily("lyncgate_relay_packets", "RTP packets relayed",
                                  value=done["packets"] + live["packets"])
        # RFC 3550's cumulative loss falls when a late packet arrives, and a counter must
        # never fall: ended calls' final losses are the counter, calls in progress a gauge.
        yield CounterMetricFamily("lyncgate_relay_packets_lost",
                                  "RTP packets lost (sequence gaps) on ended calls' streams",
                                  value=done["lost"])
        yield GaugeMetricFamily("lyncgate_relay_packets_lost_in_progress",
                                "RTP packets lost so far on calls in progress",
                                value=live["lost"])
        yield CounterMetricFamily("lyncgate_relay_packets_dropped",
                                  "Relayed packets dropped as bad (short, wrong version, "
                                  "failed authentication)",
                                  value=done["dropped"] + live["dropped"])


def registry_for(node: Node) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node))
    ProcessCollector(registry=registry)  # process CPU seconds, memory, open files
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
