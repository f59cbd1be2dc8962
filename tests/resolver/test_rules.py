"""RFC 3263/2782 rules without DNS: transport and port choice, NAPTR and SRV ordering,
weighted selection, failover on timeout and 503."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from gateway.resolver.rfc3263 import (
    Naptr,
    ResolveError,
    Resolver,
    Srv,
    Target,
    order_naptr,
    order_srv,
    transport_without_srv,
    transports_allowed,
    try_targets,
)
from gateway.sip.uri import SipUri, parse_uri

ALL = ("TLS", "TCP", "UDP")


def sip(text: str) -> SipUri:
    uri = parse_uri(text)
    assert isinstance(uri, SipUri)
    return uri


@pytest.mark.parametrize(
    ("uri", "transport"),
    [
        ("sip:10.0.0.1", "UDP"),  # numeric host: UDP for sip:
        ("sips:10.0.0.1", "TLS"),  # ... TLS for sips:
        ("sip:host.example.com:5070", "UDP"),  # explicit port: no NAPTR/SRV
        ("sip:host.example.com;transport=tcp", None),  # SRV for TCP only
        ("sip:host.example.com:5061;transport=tls", "TLS"),  # explicit transport wins
        ("sip:host.example.com", None),  # DNS decides
        ("sip:[2001:db8::1]:5080", "UDP"),
    ],
)
def test_transport_without_dns(uri: str, transport: str | None) -> None:
    assert transport_without_srv(sip(uri), ALL) == transport


def test_sips_allows_only_tls() -> None:
    assert transports_allowed(sip("sips:example.com"), ALL) == ("TLS",)
    assert transports_allowed(sip("sips:example.com;transport=tcp"), ALL) == ("TLS",)


def test_naptr_order_then_preference_and_only_services_we_speak() -> None:
    records = [
        Naptr(20, 10, "s", "SIP+D2U", "_sip._udp.example.com"),
        Naptr(10, 50, "s", "SIP+D2T", "_sip._tcp.example.com"),
        Naptr(10, 20, "s", "SIPS+D2T", "_sips._tcp.example.com"),
        Naptr(5, 1, "s", "SIP+D2S", "_sip._sctp.example.com"),  # SCTP: not ours
        Naptr(1, 1, "u", "E2U+sip", "!^.*$!sip:x@y!"),  # not an SRV pointer
    ]
    assert order_naptr(records, ALL) == [
        ("TLS", "_sips._tcp.example.com"),
        ("TCP", "_sip._tcp.example.com"),
        ("UDP", "_sip._udp.example.com"),
    ]
    assert order_naptr(records, ("TCP",)) == [("TCP", "_sip._tcp.example.com")]


def test_srv_priority_first_then_weight_proportional() -> None:
    records = [Srv(20, 0, 5061, "backup"), Srv(10, 3, 5061, "a"), Srv(10, 1, 5061, "b")]
    rng = random.Random(1)
    firsts = Counter(order_srv(records, rng)[0].target for _ in range(4000))
    assert set(firsts) == {"a", "b"}
    assert 2.4 < firsts["a"] / firsts["b"] < 3.8  # weight 3 : 1
    assert all(order_srv(records, rng)[-1].target == "backup" for _ in range(50))


def test_srv_weight_zero_records_are_used_last_not_dropped() -> None:
    records = [Srv(10, 0, 5060, "zero"), Srv(10, 5, 5060, "five")]
    order = [s.target for s in order_srv(records, random.Random(3))]
    assert order == ["five", "zero"]


def test_srv_dot_target_means_no_service() -> None:
    assert order_srv([Srv(0, 0, 0, ".")], random.Random()) == []


A, B, C = (Target("TLS", f"{n}.example.com", f"127.0.0.{i}", 5061)
           for i, n in enumerate("abc", 1))


async def test_failover_moves_on_for_timeout_and_503_and_stops_on_other_answers() -> None:
    seen: list[Target] = []

    async def attempt(target: Target) -> int:
        seen.append(target)
        if target is A:
            raise TimeoutError
        return 503 if target is B else 486

    assert await try_targets([A, B, C], attempt) == (C, 486)
    assert seen == [A, B, C]


async def test_failover_returns_the_last_503_or_raises_the_timeout() -> None:
    async def busy(target: Target) -> int:
        return 503

    async def silent(target: Target) -> int:
        raise TimeoutError

    assert await try_targets([A, B], busy) == (B, 503)
    with pytest.raises(TimeoutError):
        await try_targets([A, B], silent)
    with pytest.raises(ResolveError):
        await try_targets([], busy)


@pytest.mark.parametrize("host", ["a..example.com", "x" * 64 + ".example.com"])
async def test_a_name_dns_cannot_ask_for_is_a_resolve_error_in_words(host: str) -> None:
    """dnspython refuses such names before any query; the caller gets ResolveError (a 404
    saying why), never an exception that leaves the INVITE unanswered."""
    resolver = Resolver(("127.0.0.1", 9))  # never asked: the name fails first
    with pytest.raises(ResolveError, match="not a valid DNS name"):
        await resolver.resolve(sip(f"sip:bob@{host}"))


@pytest.mark.parametrize(
    ("uri", "targets"),
    [
        ("sip:bob@10.0.0.1", [Target("UDP", "10.0.0.1", "10.0.0.1", 5060)]),
        ("sips:bob@10.0.0.1", [Target("TLS", "10.0.0.1", "10.0.0.1", 5061)]),
        ("sip:bob@10.0.0.1:5070;transport=tcp", [Target("TCP", "10.0.0.1", "10.0.0.1", 5070)]),
        ("sip:bob@[2001:db8::1]:5080", [Target("UDP", "2001:db8::1", "2001:db8::1", 5080)]),
        ("sip:bob@host.example.com:5070", None),  # still an A/AAAA look-up
        ("sip:bob@host.example.com", None),
    ],
)
def test_only_a_numeric_host_resolves_without_dns(uri: str, targets: list[Target] | None) -> None:
    """resolve_now answers what needs no query (so a call can be placed at once) and leaves
    every name to DNS."""
    assert Resolver(("127.0.0.1", 9)).resolve_now(sip(uri)) == targets


def test_resolve_now_refuses_a_uri_no_transport_can_reach() -> None:
    resolver = Resolver(("127.0.0.1", 9), transports=("UDP",))
    with pytest.raises(ResolveError, match="no usable transport"):
        resolver.resolve_now(sip("sips:bob@10.0.0.1"))
