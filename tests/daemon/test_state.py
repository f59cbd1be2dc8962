"""The daemon's state directory and the self-signed certificate it makes for a bare node."""

from __future__ import annotations

import datetime as dt
import stat
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.certs.names import matches
from gateway.config.schema import NodeConfig
from gateway.daemon.state import ensure_self_signed, state_dir

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
NODE = NodeConfig(
    name="conf01",
    location="",
    sip_tls_fqdn="conf01.vc.example.com",
    address="127.0.0.1",
    static_nat_address="",
    state_dir="",
)


def test_self_signed_certificate_names_node_and_allows_both_tls_roles(tmp_path: Path) -> None:
    made = ensure_self_signed(tmp_path, NODE, NOW)
    assert made.created
    cert = x509.load_pem_x509_certificate(made.certificate.read_bytes())
    assert matches(cert, "conf01.vc.example.com")
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
    assert stat.S_IMODE(made.private_key.stat().st_mode) == 0o600


def test_self_signed_certificate_is_reused_until_near_expiry(tmp_path: Path) -> None:
    first = ensure_self_signed(tmp_path, NODE, NOW)
    again = ensure_self_signed(tmp_path, NODE, NOW + dt.timedelta(days=300))
    assert not again.created
    assert again.certificate.read_bytes() == first.certificate.read_bytes()
    renewed = ensure_self_signed(tmp_path, NODE, NOW + dt.timedelta(days=340))
    assert renewed.created


def test_self_signed_certificate_is_remade_when_the_fqdn_changes(tmp_path: Path) -> None:
    ensure_self_signed(tmp_path, NODE, NOW)
    moved = replace(NODE, sip_tls_fqdn="conf02.vc.example.com")
    remade = ensure_self_signed(tmp_path, moved, NOW)
    assert remade.created
    cert = x509.load_pem_x509_certificate(remade.certificate.read_bytes())
    assert matches(cert, "conf02.vc.example.com")


def test_state_dir_prefers_config_then_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/run/sd-state:/other")
    assert state_dir(replace(NODE, state_dir="/srv/lg")) == Path("/srv/lg")
    assert state_dir(NODE) == Path("/run/sd-state")
