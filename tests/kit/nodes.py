"""Node configs the daemon tests start from, and reading a metric out of /metrics."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

BASE = """
[node]
name = "test-node"
sip_tls_fqdn = "gw.example.com"
address = "127.0.0.1"
state_dir = "@STATE@"

[listen]
udp = @UDP@
tcp = @TCP@
tls = @TLS@

[tls]
verify_mode = "off"
"""
RULES = """
[[routing_rules]]
name = "endpoints"
priority = 10
protocols = ["sip"]
match = 'routed'  # host IP addresses are not part of the parsed alias
"""


def metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0
