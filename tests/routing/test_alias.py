"""The parsed alias rules match against, as the guide defines it, and the service address
forms (`alias*pin`, `reception**conference id`)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routing import alias
from routing.alias import ServiceAddress, parse_alias, split_service_address


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ("sip:alice@example.com;transport=tls", "alice@example.com"),  # the guide's example
        ("sip:1234@10.1.2.3", "1234"),  # the guide: host IP addresses are ignored
        ("sips:Bob@Example.com", "Bob@Example.com"),  # case kept for replace strings
        ("h323:room@vc.example.com", "room@vc.example.com"),
        ("tel:+4712345678;phone-context=example.com", "+4712345678"),
        ('"Alice" <sip:alice@example.com;gr=urn:uuid:1>', "alice@example.com"),
        ("sip:alice@example.com:5061?subject=hi", "alice@example.com"),
        ("sip:9876@[2001:db8::1]:5060", "9876"),
        ("sip:10.0.0.5", "10.0.0.5"),  # nothing but an address: keep it
        ("meet.alice", "meet.alice"),
        ("SIP:carol@example.com", "carol@example.com"),
    ],
)
def test_parsed_alias(raw: str, parsed: str) -> None:
    assert parse_alias(raw) == parsed


@pytest.mark.parametrize(
    ("parsed", "address"),
    [
        ("meet.alice*1234@example.com", ServiceAddress("meet.alice@example.com", pin="1234")),
        ("alice.vmr*98765", ServiceAddress("alice.vmr", pin="98765")),
        ("lobby**1234567@example.com",
         ServiceAddress("lobby@example.com", conference_id="1234567")),
        ("star*name@example.com", ServiceAddress("star*name@example.com")),  # not digits
        ("plain@example.com", ServiceAddress("plain@example.com")),
    ],
)
def test_service_address_forms(parsed: str, address: ServiceAddress) -> None:
    assert split_service_address(parsed) == address


@given(st.text(max_size=80))
def test_parse_alias_never_raises(raw: str) -> None:
    parsed = parse_alias(raw)
    assert isinstance(parsed, str)


@given(st.text(alphabet="0123456789.:abf[]%", max_size=16))
def test_ip_hosts_are_told_from_names_as_ipaddress_tells_them(host: str) -> None:
    """The cheap pre-check in front of ipaddress changes no answer."""
    try:
        ipaddress.ip_address(host[1:-1] if host.startswith("[") else host)
    except ValueError:
        expected = False
    else:
        expected = True
    assert alias._is_ip(host) is expected


def test_a_host_name_is_not_handed_to_ipaddress(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a host that could be an IP literal (with a ':', or four runs of digits) is
    parsed by ipaddress: refusing a name costs it microseconds (it raises), and most hosts
    are names."""
    asked: list[str] = []
    real = ipaddress.ip_address

    def spy(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        asked.append(host)
        return real(host)

    monkeypatch.setattr(ipaddress, "ip_address", spy)
    alias._is_ip.cache_clear()  # results are cached per host: earlier tests asked these
    for host in ("example.com", "vc.example.com", "1234", "1.2.3", "a.b.c.d", "10.0.0.1",
                 "[2001:db8::1]"):
        alias._is_ip(host)
    assert asked == ["10.0.0.1", "2001:db8::1"]
