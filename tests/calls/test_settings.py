"""Call control's settings snapshot read from a real config file, and what a call takes from
it: toward Lync, the outgoing location's Lync server when the rule names none (the guide's
`locations[].lync_server`), the rule's own `call_via` over it."""

from __future__ import annotations

from gateway.calls.settings import CallSettings, Local
from gateway.config.load import parse_text
from gateway.resolver.rfc3263 import Resolver, Target
from gateway.sip.message import Response, make_response
from gateway.transport.peer import Transport
from ice.ports import PortAllocator
from routing.engine import Router
from sdp.parse import parse_sdp
from tests.kit.calls import (
    CALLER,
    FIRST,
    FakeResolver,
    Harness,
    invite,
    invite_with,
    outbound,
    sdp_body,
)
from tests.peers import free_port

CONFIG = """
[node]
location = "London"

[global]
mssip_domain = "vc.example.com"

[[locations]]
name = "London"
lync_server = "lync-london"
turn_server = "turn-london"

[[locations]]
name = "Oslo"
mssip_domain = "oslo.example.com"

[[lync_servers]]
name = "lync-london"
address = "10.1.2.3"
port = 5061
transport = "tls"

[[turn_servers]]
name = "turn-london"
address = "10.1.2.4"
port = 3478
username = "u"
password = "p"

[[routing_rules]]
name = "to Lync"
priority = 10
protocols = ["sip"]
match = '(.+)@gw\\.example\\.com'
replace = '\\1@lync.example.com'
outgoing_protocol = "mssip"
"""


def settings(text: str = CONFIG) -> CallSettings:
    config = parse_text(text, "t.toml", base_dir=None)
    return CallSettings.from_config(config, Router(config.services, config.routing_rules), 3)


def test_the_snapshot_reads_every_location_choice() -> None:
    s = settings()
    assert s.generation == 3 and s.location == "London"
    assert s.location_lync_server == {"London": "lync-london"}
    assert (s.next_hops["lync-london"].address, s.next_hops["lync-london"].port) == (
        "10.1.2.3", 5061)
    turn = s.turn_for("", "")
    assert turn is not None and turn.address == "10.1.2.4"  # automatic: the node's location
    assert s.turn_for("", "Oslo") is None
    assert (s.mssip_domain(""), s.mssip_domain("Oslo")) == ("vc.example.com", "oslo.example.com")


async def test_a_call_toward_lync_goes_to_the_locations_lync_server() -> None:
    h = Harness(None)  # DNS would fail: the server is an address
    h.use_resolver(Resolver(("127.0.0.1", 9), timeout=0.5))  # any look-up stays on loopback
    s = settings()
    h.configure(router=s.router, location=s.location, next_hops=s.next_hops,
                location_lync_server=s.location_lync_server)
    h.feed(invite(), CALLER)
    await h.settle()
    out, peer = outbound(h.take(), "INVITE")
    assert (peer.transport, peer.host, peer.port) == ("TLS", "10.1.2.3", 5061)
    assert out.uri_text == "sip:alice@lync.example.com"  # the destination stays the URI


async def test_the_rules_call_via_comes_before_the_locations_server() -> None:
    text = CONFIG.replace('outgoing_protocol = "mssip"',
                          'outgoing_protocol = "mssip"\ncall_via = "edge"') + (
        '[[lync_servers]]\nname = "edge"\naddress = "10.9.9.9"\nport = 5062\n'
        'transport = "tls"\n')
    s = settings(text)
    h = Harness(None)
    h.use_resolver(Resolver(("127.0.0.1", 9), timeout=0.5))  # any look-up stays on loopback
    h.configure(router=s.router, location=s.location, next_hops=s.next_hops,
                location_lync_server=s.location_lync_server)
    h.feed(invite(), CALLER)
    await h.settle()
    _, peer = outbound(h.take(), "INVITE")
    assert (peer.host, peer.port) == ("10.9.9.9", 5062)


async def test_a_call_toward_lync_with_no_server_named_asks_for_the_federation_record() -> None:
    """Neither the rule nor the location names a Lync server: the destination's domain is
    looked up for federation (`_sipfederationtls._tcp`) first; a SIP call is not."""
    for protocol, federation in (("mssip", True), ("sip", False)):
        s = settings(CONFIG.replace('outgoing_protocol = "mssip"',
                                    f'outgoing_protocol = "{protocol}"'))
        h = Harness([FIRST])
        h.configure(router=s.router, location=s.location)  # no Lync server for the location
        h.feed(invite(), CALLER)
        await h.settle()
        assert isinstance(h.resolver, FakeResolver)
        assert h.resolver.asked == [("lync.example.com", federation)]


async def test_behind_static_nat_a_peer_outside_is_given_the_public_address() -> None:
    """The guide's static NAT appendix: Via and Contact toward a peer on the Internet name
    the public address; toward one on the node's private network, the private one."""
    public = Target(Transport.UDP, "edge.partner.example", "93.184.216.34", 5060)
    private = Target(Transport.UDP, "pbx.corp.example", "10.20.0.7", 5060)
    for target, expected in ((public, "203.0.113.9"), (private, "10.20.0.5")):
        h = Harness([target], address="10.20.0.5")
        h.b2bua.ctx.local = Local("10.20.0.5", {Transport.UDP: 5060}, static_nat="203.0.113.9")
        h.feed(invite(), CALLER)
        await h.settle()
        out, _ = outbound(h.take(), "INVITE")
        assert out.top_via.host == expected
        assert out.contacts[0].uri.host == expected  # type: ignore[union-attr]


async def test_behind_static_nat_each_legs_sdp_names_the_address_it_reaches() -> None:
    """An anchored call from a phone on the node's private network to an endpoint on the
    Internet: the callee's offer names the public address, the caller's answer the private
    one; the relay's sockets are bound on the node's own address either way."""
    base = free_port()
    public = Target(Transport.UDP, "room.partner.example", "93.184.216.34", 5060)
    h = Harness([public], ports=PortAllocator(base, base + 20), address="127.0.0.1")
    h.b2bua.ctx.local = Local("127.0.0.1", {Transport.UDP: 5060}, static_nat="203.0.113.9")
    h.feed(invite_with(sdp_body(4000)), CALLER)  # the caller: 192.0.2.10, not global
    for _ in range(20):
        await h.settle()
    out, peer = outbound(h.take(), "INVITE")
    offer = parse_sdp(out.body)
    assert offer.connection_address(offer.media[0]) == "203.0.113.9"
    h.feed(make_response(out, 200, to_tag="callee", body=sdp_body(5000),
                         content_type="application/sdp",
                         headers=(("Contact", "<sip:room@93.184.216.34>"),)), peer)
    ok = next(m for m, _ in h.take() if isinstance(m, Response) and m.status == 200)
    answer = parse_sdp(ok.body)
    assert answer.connection_address(answer.media[0]) == "127.0.0.1"
