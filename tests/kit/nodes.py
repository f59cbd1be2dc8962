"""Node configs the daemon tests start from, and reading a metric out of /metrics."""

from __future__ import annotations

from pathlib import Path

import trustme
from prometheus_client.parser import text_string_to_metric_families


def loopback_node(fqdn: str = "gw.example.com", *, name: str = "test-node",
                  tls: bool = True) -> str:
    """`[node]` and `[listen]` on 127.0.0.1, with the daemon harness's placeholders for the
    state directory and free ports (tests/daemon/harness.py); `tls` False listens on none."""
    return (f'\n[node]\nname = "{name}"\nsip_tls_fqdn = "{fqdn}"\naddress = "127.0.0.1"\n'
            f'state_dir = "@STATE@"\n\n[listen]\nudp = @UDP@\ntcp = @TCP@\n'
            f'tls = {"@TLS@" if tls else 0}\n')


BASE = loopback_node() + '\n[tls]\nverify_mode = "off"\n'


def write_pki(folder: Path) -> None:
    """A test CA (`folder`/ca.pem), the node's certificate for gw.example.com
    (node.pem, node.key) and the Lync pool's for its end of mutual TLS (lync.pem,
    fepool.lync.test), both from that CA."""
    ca = trustme.CA()
    node = ca.issue_cert("gw.example.com")
    node.cert_chain_pems[0].write_to_path(folder / "node.pem")
    node.private_key_pem.write_to_path(folder / "node.key")
    ca.cert_pem.write_to_path(folder / "ca.pem")
    ca.issue_cert("fepool.lync.test").private_key_and_cert_chain_pem.write_to_path(
        folder / "lync.pem")


def with_pki(text: str, folder: Path, *, verify: bool) -> str:
    """A node config whose [tls] says `verify_mode = "off"` given `write_pki`'s files;
    `verify` turns the node's certificate checks (of Lync's pools too) on."""
    return text.replace('verify_mode = "off"', (
        f'verify_mode = "{"on" if verify else "off"}"\ncertificate = "{folder / "node.pem"}"\n'
        f'private_key = "{folder / "node.key"}"\ntrusted_ca = "{folder / "ca.pem"}"'))


def mutual_tls_node(folder: Path, *, verify: bool = False) -> str:
    """BASE with `write_pki`'s certificates written to `folder`."""
    write_pki(folder)
    return with_pki(BASE, folder, verify=verify)


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
