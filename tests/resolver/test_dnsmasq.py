"""RFC 3263 against a real DNS server: dnsmasq on a loopback port serving NAPTR, SRV and A
records, queried by the resolver the daemon uses."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from structlog.testing import capture_logs

from gateway.resolver.rfc3263 import ResolveError, Resolver, Target
from gateway.sip.uri import SipUri, parse_uri
from tests.peers import dnsmasq

pytestmark = pytest.mark.peer

RECORDS = [
    "--local=/test/",  # authoritative for .test: unknown names get NXDOMAIN, not REFUSED
    # example.test: NAPTR prefers TLS, then TCP
    "--naptr-record=example.test,10,10,s,SIPS+D2T,,_sips._tcp.example.test",
    "--naptr-record=example.test,20,10,s,SIP+D2T,,_sip._tcp.example.test",
    "--srv-host=_sips._tcp.example.test,fe1.example.test,5061,10,60",
    "--srv-host=_sips._tcp.example.test,fe2.example.test,5061,20,0",
    "--srv-host=_sip._tcp.example.test,fe1.example.test,5060,10,0",
    "--host-record=fe1.example.test,127.0.0.11",
    "--host-record=fe2.example.test,127.0.0.12",
    # srvonly.test: no NAPTR, SRV for TCP only
    "--srv-host=_sip._tcp.srvonly.test,proxy.srvonly.test,5070,0,0",
    "--host-record=proxy.srvonly.test,127.0.0.21",
    # plain.test: only an A record
    "--host-record=plain.test,127.0.0.31",
    # partner.test: another organisation's Edge, at its federation record; RFC 3263 would
    # find its SIP proxy instead
    "--srv-host=_sipfederationtls._tcp.partner.test,sipfed.partner.test,5061,0,0",
    "--host-record=sipfed.partner.test,127.0.0.41",
    "--srv-host=_sip._tcp.partner.test,proxy.partner.test,5060,0,0",
    "--host-record=proxy.partner.test,127.0.0.42",
]


def sip(text: str) -> SipUri:
    uri = parse_uri(text)
    assert isinstance(uri, SipUri)
    return uri


@pytest.fixture(scope="module")
def dns_port() -> Iterator[int]:
    with dnsmasq(RECORDS) as port:
        yield port


async def test_naptr_srv_a_chain_gives_tls_targets_by_priority(dns_port: int) -> None:
    resolver = Resolver(("127.0.0.1", dns_port), rng=random.Random(0))
    assert await resolver.resolve(sip("sip:alice@example.test")) == [
        Target("TLS", "fe1.example.test", "127.0.0.11", 5061),
        Target("TLS", "fe2.example.test", "127.0.0.12", 5061),
    ]


async def test_explicit_transport_queries_that_srv_without_naptr(dns_port: int) -> None:
    resolver = Resolver(("127.0.0.1", dns_port))
    assert await resolver.resolve(sip("sip:alice@example.test;transport=tcp")) == [
        Target("TCP", "fe1.example.test", "127.0.0.11", 5060)
    ]


async def test_srv_without_naptr(dns_port: int) -> None:
    resolver = Resolver(("127.0.0.1", dns_port))
    assert await resolver.resolve(sip("sip:bob@srvonly.test")) == [
        Target("TCP", "proxy.srvonly.test", "127.0.0.21", 5070)
    ]


async def test_explicit_port_skips_naptr_and_srv(dns_port: int) -> None:
    resolver = Resolver(("127.0.0.1", dns_port))
    assert await resolver.resolve(sip("sip:fe2.example.test:5099")) == [
        Target("UDP", "fe2.example.test", "127.0.0.12", 5099)
    ]


async def test_a_record_only_falls_back_to_udp_5060(dns_port: int) -> None:
    resolver = Resolver(("127.0.0.1", dns_port))
    assert await resolver.resolve(sip("sip:carol@plain.test")) == [
        Target("UDP", "plain.test", "127.0.0.31", 5060)
    ]


async def test_unknown_name_fails_with_logged_lookup_failures(dns_port: int) -> None:
    resolver = Resolver(("127.0.0.1", dns_port))
    with capture_logs() as logged, pytest.raises(ResolveError, match=r"nowhere\.test"):
        await resolver.resolve(sip("sip:x@nowhere.test"))
    failures = {(e["name"], e["rdtype"]) for e in logged
                if e["event"] == "RFC3263 lookup failure"}
    assert ("nowhere.test", "NAPTR") in failures
    assert ("_sips._tcp.nowhere.test", "SRV") in failures
    assert ("nowhere.test", "A") in failures


async def test_answers_are_cached_for_their_ttl() -> None:
    now = [0.0]
    with dnsmasq(RECORDS) as port:
        resolver = Resolver(("127.0.0.1", port), clock=lambda: now[0])
        first = await resolver.resolve(sip("sip:bob@srvonly.test"))
        sent = resolver.queries
    # dnsmasq is gone: within the TTLs the cache answers alone
    now[0] = 29.0  # within the 30 s negative TTL too
    assert await resolver.resolve(sip("sip:bob@srvonly.test")) == first
    assert resolver.queries == sent
    now[0] = 61.0
    resolver._dns.lifetime = 0.3  # the server is gone; do not wait long to find out
    with pytest.raises(ResolveError):
        await resolver.resolve(sip("sip:bob@srvonly.test"))
    assert resolver.queries > sent


async def test_calls_toward_lync_find_a_federated_edge_by_its_federation_record(
        dns_port: int) -> None:
    """The guide's federation: `_sipfederationtls._tcp.<domain>` names another organisation's
    Edge, over TLS; a call that is not toward Lync resolves the domain by RFC 3263, and one
    toward a domain with no federation record falls back to it too."""
    resolver = Resolver(("127.0.0.1", dns_port))
    assert await resolver.resolve(sip("sip:bob@partner.test"), federation=True) == [
        Target("TLS", "sipfed.partner.test", "127.0.0.41", 5061)]
    assert await resolver.resolve(sip("sip:bob@partner.test")) == [
        Target("TCP", "proxy.partner.test", "127.0.0.42", 5060)]
    assert await resolver.resolve(sip("sip:bob@srvonly.test"), federation=True) == [
        Target("TCP", "proxy.srvonly.test", "127.0.0.21", 5070)]
