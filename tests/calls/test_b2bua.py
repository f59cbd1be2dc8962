"""The B2BUA driven through the endpoint without sockets: a fake resolver and the event loop
only for its two waits. Pins the outbound INVITE, provisional relay, 2xx/ACK, BYE both ways,
503 failover, CANCEL, the local 180 and a failed look-up."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.calls.cdr import CdrStore
from gateway.calls.settings import CallLimits, NextHop
from gateway.config.load import parse_text
from gateway.resolver.rfc3263 import Resolver, Target
from gateway.sip.message import Request, Response, make_response
from gateway.sip.uri import SipUri
from gateway.transport.peer import Peer, Transport
from ice.ports import PortAllocator
from routing.engine import Router
from sdp.parse import parse_sdp
from tests.kit.calls import (
    CALLER,
    FIRST,
    RULES,
    SECOND,
    FakeResolver,
    Harness,
    far,
    invite,
    invite_with,
    outbound,
    phone,
    sdp_body,
    statuses,
)
from tests.peers import free_port


async def test_call_connects_and_bye_from_the_caller_ends_both_legs(tmp_path: Path) -> None:
    cdrs = CdrStore(tmp_path / "cdr.sqlite3")
    h = Harness([FIRST], cdrs)
    h.feed(invite(), CALLER)
    await h.settle()
    sent = h.take()
    assert statuses(sent, CALLER) == [100]
    out, peer = outbound(sent, "INVITE")
    assert peer == far(FIRST) and out.uri_text == "sip:alice@uas.example.com"
    assert peer.server_name == "uas.example.com"  # what a TLS connection must be certified for
    assert out.call_id != "in-call-1" and out.body == b"v=0\r\ns=x\r\n"
    assert out.max_forwards == 69 and out.from_.display == '"Bob"'
    h.feed(make_response(out, 180, to_tag="callee"), peer)
    ok = make_response(out, 200, to_tag="callee", headers=(("Contact", "<sip:a@198.51.100.1>"),),
                       body=b"v=0\r\n", content_type="application/sdp")
    h.feed(ok, peer)
    sent = h.take()
    assert statuses(sent, CALLER) == [180, 200]
    answer = next(m for m, p in sent if isinstance(m, Response) and m.status == 200)
    assert answer.body == b"v=0\r\n" and answer.to.tag and answer.call_id == "in-call-1"
    ack, ack_peer = outbound(sent, "ACK")
    assert ack.cseq.seq == 1 and ack.uri_text == "sip:a@198.51.100.1" and ack_peer == peer
    h.feed(ok, peer)  # the 2xx again: its ACK was lost
    assert [m.method for m, _ in h.take() if isinstance(m, Request)] == ["ACK"]
    bye = (f"BYE sip:gw@203.0.113.5 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5062;"
           f"branch=z9hG4bK-bye1;rport\r\nFrom: <sip:bob@example.org>;tag=caller\r\n"
           f"To: <sip:alice@gw.example.com>;tag={answer.to.tag}\r\nCall-ID: in-call-1\r\n"
           "CSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()
    h.feed(bye, CALLER)
    sent = h.take()
    assert statuses(sent, CALLER) == [200]
    out_bye, bye_peer = outbound(sent, "BYE")
    assert out_bye.call_id == out.call_id and out_bye.to.tag == "callee" and bye_peer == peer
    assert h.b2bua.calls == {}
    [cdr] = cdrs.recent()
    assert (cdr["in_call_id"], cdr["out_call_id"], cdr["rule"], cdr["destination"]) == (
        "in-call-1", out.call_id, "to endpoints", "alice@uas.example.com")
    assert cdr["ringing"] and cdr["answered"] and cdr["ended"]
    assert (cdr["end_cause"], cdr["ended_by"]) == ("BYE from the caller", "caller")


async def test_bye_from_the_callee_hangs_up_the_caller() -> None:
    h = Harness([FIRST])
    h.feed(invite(), CALLER)
    await h.settle()
    out, peer = outbound(h.take(), "INVITE")
    h.feed(make_response(out, 200, to_tag="callee",
                         headers=(("Contact", "<sip:a@198.51.100.1>"),)), peer)
    answer = next(m for m, _ in h.take() if isinstance(m, Response) and m.status == 200)
    bye = (f"BYE sip:203.0.113.5 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.1:5060;"
           f"branch=z9hG4bK-cbye\r\nFrom: <sip:alice@uas.example.com>;tag=callee\r\n"
           f"To: {out.headers.get('From')}\r\nCall-ID: {out.call_id}\r\nCSeq: 1 BYE\r\n"
           "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()
    h.feed(bye, peer)
    sent = h.take()
    assert statuses(sent, peer) == [200]
    to_caller, caller_peer = outbound(sent, "BYE")
    assert caller_peer == CALLER and to_caller.call_id == "in-call-1"
    assert to_caller.uri_text == "sip:bob@192.0.2.10:5062" and to_caller.to.tag == "caller"
    assert to_caller.from_.tag == answer.to.tag


async def test_overload_gets_503_with_retry_after_and_calls_in_progress_go_on(
    tmp_path: Path,
) -> None:
    cdrs = CdrStore(tmp_path / "cdr.sqlite3")
    h = Harness([FIRST], cdrs, CallLimits(max_calls=1, retry_after=17))
    h.feed(invite(), CALLER)
    await h.settle()
    h.take()
    h.feed(invite("carol").replace(b"in-call-1", b"in-call-2").replace(b"-in1", b"-in2"),
           CALLER)
    sent = h.take()
    assert statuses(sent, CALLER) == [100, 503]  # 100 Trying comes from the transaction
    refused = next(m for m, _ in sent if isinstance(m, Response) and m.status == 503)
    assert refused.headers.get("Retry-After") == "17" and "call limit reached" in refused.reason
    assert len(h.b2bua.calls) == 1


async def test_calls_per_second_limit() -> None:
    h = Harness([FIRST], limits=CallLimits(max_calls_per_second=2))
    for n in range(3):
        h.feed(invite(f"u{n}").replace(b"in-call-1", b"c%d" % n).replace(b"-in1", b"-n%d" % n),
               CALLER)
    codes = [m.status for m, _ in h.take() if isinstance(m, Response)]
    assert codes.count(503) == 1 and len(h.b2bua.calls) == 2


async def test_rejected_calls_are_recorded_too(tmp_path: Path) -> None:
    cdrs = CdrStore(tmp_path / "cdr.sqlite3")
    h = Harness([FIRST], cdrs)
    h.feed(invite().replace(b"gw.example.com", b"elsewhere.org"), CALLER)
    [cdr] = cdrs.recent()
    assert cdr["outcome"] == "reject" and str(cdr["end_cause"]).startswith("404 ")


async def test_503_moves_to_the_next_target_and_a_busy_callee_is_relayed() -> None:
    h = Harness([FIRST, SECOND])
    h.feed(invite(), CALLER)
    await h.settle()
    first, peer = outbound(h.take(), "INVITE")
    h.feed(make_response(first, 503, to_tag="x"), peer)
    sent = h.take()
    second, peer2 = outbound(sent, "INVITE")
    assert peer2 == far(SECOND) and statuses(sent, CALLER) == []
    h.feed(make_response(second, 486, to_tag="y"), peer2)
    assert statuses(h.take(), CALLER) == [486]


def cancel_of_invite() -> bytes:
    return invite().replace(b"INVITE sip", b"CANCEL sip", 1).replace(
        b"CSeq: 1 INVITE", b"CSeq: 1 CANCEL").replace(b"Content-Length: 10\r\n\r\nv=0\r\ns=x\r\n",
                                                        b"Content-Length: 0\r\n\r\n")


async def test_cancel_from_the_caller_cancels_the_outbound_invite() -> None:
    h = Harness([FIRST])
    h.feed(invite(), CALLER)
    await h.settle()
    out, peer = outbound(h.take(), "INVITE")
    h.feed(make_response(out, 180, to_tag="callee"), peer)
    h.take()
    h.feed(cancel_of_invite(), CALLER)
    sent = h.take()
    assert sorted(statuses(sent, CALLER)) == [200, 487]  # CANCEL answered, INVITE ended
    out_cancel, cancel_peer = outbound(sent, "CANCEL")
    assert out_cancel.top_via.branch == out.top_via.branch and cancel_peer == peer


async def test_a_cancel_waits_for_the_callees_first_provisional() -> None:
    """RFC 3261 9.1: no CANCEL for an INVITE nothing has answered yet; it goes when the
    first provisional (even 100 Trying) arrives, and the caller is not kept waiting."""
    h = Harness([FIRST])
    h.feed(invite(), CALLER)
    await h.settle()
    out, peer = outbound(h.take(), "INVITE")
    h.feed(cancel_of_invite(), CALLER)
    sent = h.take()
    assert sorted(statuses(sent, CALLER)) == [200, 487]
    assert not [m for m, _ in sent if isinstance(m, Request) and m.method == "CANCEL"]
    h.feed(make_response(out, 100), peer)
    out_cancel, cancel_peer = outbound(h.take(), "CANCEL")
    assert out_cancel.top_via.branch == out.top_via.branch and cancel_peer == peer
    h.feed(make_response(out, 180, to_tag="callee"), peer)
    assert h.take() == []  # one CANCEL only, and nothing relayed to a caller that left


async def test_local_ringing_when_the_far_end_says_nothing() -> None:
    h = Harness([FIRST])
    h.feed(invite(), CALLER)
    await h.settle()
    h.take()
    h.collect(h.ep.handle_timeout(1.9))  # the INVITE's retransmissions, nothing more
    assert statuses(h.take(), CALLER) == []
    h.collect(h.ep.handle_timeout(2.0))  # 2 s of nothing from the far end
    assert statuses(h.take(), CALLER) == [180]
    h.collect(h.ep.handle_timeout(10.0))
    assert statuses(h.take(), CALLER) == []  # one local 180 only


async def test_no_local_ringing_once_the_far_end_rings() -> None:
    h = Harness([FIRST])
    h.feed(invite(), CALLER)
    await h.settle()
    out, peer = outbound(h.take(), "INVITE")
    h.feed(make_response(out, 180, to_tag="callee"), peer)
    assert statuses(h.take(), CALLER) == [180]
    h.collect(h.ep.handle_timeout(2.0))
    assert statuses(h.take(), CALLER) == []


def test_a_call_to_an_address_is_placed_while_its_invite_is_handled() -> None:
    """A numeric target needs no DNS, and signalling-only calls no media: the outbound
    INVITE leaves with the 100 Trying, from the same message, with no task to wait for."""
    h = Harness([FIRST], rules=RULES.replace("uas.example.com", "198.51.100.7:5070"))
    h.use_resolver(Resolver())
    h.feed(invite(), CALLER)
    sent = h.take()  # no turn of the event loop in between
    assert statuses(sent, CALLER) == [100]
    out, peer = outbound(sent, "INVITE")
    assert out.uri_text == "sip:alice@198.51.100.7:5070"
    assert (peer.transport, peer.host, peer.port) == ("UDP", "198.51.100.7", 5070)


async def test_failed_lookup_is_a_404_that_says_why() -> None:
    h = Harness(None)
    h.feed(invite(), CALLER)
    await h.settle()
    sent = h.take()
    assert statuses(sent, CALLER) == [100, 404]
    final = next(m for m, _ in sent if isinstance(m, Response) and m.status == 404)
    assert "uas.example.com: no NAPTR, SRV or A/AAAA records" in final.reason


async def test_media_is_anchored_at_the_relay_and_ports_come_back(tmp_path: Path) -> None:
    base = free_port()
    ports = PortAllocator(base, base + 20)
    caller_sock, caller, caller_port = await phone()
    callee_sock, callee, callee_port = await phone()
    cdrs = CdrStore(tmp_path / "cdr.sqlite3")
    h = Harness([FIRST], cdrs, ports=ports, address="127.0.0.1")
    offer = invite().replace(b"Content-Length: 10\r\n\r\nv=0\r\ns=x\r\n",
                             b"Content-Length: %d\r\n\r\n" % len(sdp_body(caller_port))
                             + sdp_body(caller_port))
    h.feed(offer, CALLER)
    for _ in range(20):
        await h.settle()
    out, peer = outbound(h.take(), "INVITE")
    relayed_offer = parse_sdp(out.body)
    toward_callee = relayed_offer.media[0].port
    assert relayed_offer.connection_address(relayed_offer.media[0]) == "127.0.0.1"
    assert ports.first <= toward_callee <= ports.last and toward_callee != caller_port
    ok = make_response(out, 200, to_tag="callee", headers=(("Contact", "<sip:a@127.0.0.1>"),),
                       body=sdp_body(callee_port), content_type="application/sdp")
    h.feed(ok, peer)
    answer = next(m for m, _ in h.take() if isinstance(m, Response) and m.status == 200)
    toward_caller = parse_sdp(answer.body).media[0].port
    assert toward_caller not in (toward_callee, callee_port)

    caller_sock.sendto(b"\x80\x09\x00\x01" + bytes(8) + b"hello", ("127.0.0.1", toward_caller))
    assert (await asyncio.wait_for(callee.got.get(), 5))[12:] == b"hello"
    callee_sock.sendto(b"\x80\x09\x00\x01" + bytes(8) + b"back!", ("127.0.0.1", toward_callee))
    assert (await asyncio.wait_for(caller.got.get(), 5))[12:] == b"back!"

    bye = (f"BYE sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5062;"
           f"branch=z9hG4bK-bye9;rport\r\nFrom: <sip:bob@example.org>;tag=caller\r\n"
           f"To: <sip:alice@gw.example.com>;tag={answer.to.tag}\r\nCall-ID: in-call-1\r\n"
           "CSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()
    h.feed(bye, CALLER)
    await h.settle()
    assert ports.in_use == set()
    [cdr] = cdrs.recent()
    assert '"packets": 1' in str(cdr["media"])
    caller_sock.close()
    callee_sock.close()


async def test_unreadable_sdp_offer_gets_488_saying_why() -> None:
    h = Harness([FIRST], ports=PortAllocator(40000, 40010))
    bad = invite().replace(b"v=0\r\ns=x\r\n", b"x=0\r\ns=x\r\n")
    h.feed(bad, CALLER)
    sent = h.take()
    assert statuses(sent, CALLER) == [100, 488]
    final = next(m for m, _ in sent if isinstance(m, Response) and m.status == 488)
    assert "line 1" in final.reason


async def test_call_via_a_named_proxy_keeps_the_destination_as_request_uri() -> None:
    config = parse_text(RULES.replace("replace =", 'call_via = "edge-proxy"\nreplace =')
                        + '[[sip_proxies]]\nname = "edge-proxy"\naddress = "192.0.2.77"\n'
                          'port = 5070\ntransport = "tcp"\n', "t.toml", base_dir=None)
    h = Harness(None)  # DNS would fail: the proxy is an address
    h.configure(router=Router(config.services, config.routing_rules),
                next_hops={"edge-proxy": NextHop("192.0.2.77", 5070, Transport.TCP)})
    h.use_resolver(Resolver())
    h.feed(invite(), CALLER)
    await h.settle()
    out, peer = outbound(h.take(), "INVITE")
    assert out.uri_text == "sip:alice@uas.example.com"
    assert peer == Peer("TCP", "192.0.2.77", 5070)
    assert out.top_via.transport == "TCP"


async def test_session_refresh_from_either_side_keeps_the_call_up() -> None:
    h = Harness([FIRST])
    h.feed(invite(), CALLER)
    await h.settle()
    out, peer = outbound(h.take(), "INVITE")
    h.feed(make_response(out, 200, to_tag="callee", headers=(("Contact", "<sip:a@198.51.100.1>"),),
                         body=b"v=0\r\n", content_type="application/sdp"), peer)
    answer = next(m for m, _ in h.take() if isinstance(m, Response) and m.status == 200)

    def in_dialog(method: str, cseq: int, extra: str = "") -> bytes:
        return (f"{method} sip:gw@203.0.113.5 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5062;"
                f"branch=z9hG4bK-r{cseq}{method};rport\r\n"
                "From: <sip:bob@example.org>;tag=caller\r\n"
                f"To: <sip:alice@gw.example.com>;tag={answer.to.tag}\r\nCall-ID: in-call-1\r\n"
                f"CSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n{extra}"
                "Content-Length: 0\r\n\r\n").encode()

    h.feed(in_dialog("INVITE", 5, "Session-Expires: 1800;refresher=uac\r\n"
                     "Supported: timer\r\n"), CALLER)
    refreshed = [m for m, _ in h.take() if isinstance(m, Response) and m.status == 200]
    assert refreshed and refreshed[0].body == b"v=0\r\n"  # what the caller already has
    assert refreshed[0].headers.get("Session-Expires") == "1800;refresher=uac"
    assert refreshed[0].headers.get("Require") == "timer"
    h.feed(in_dialog("UPDATE", 6), CALLER)
    [update_ok] = [m for m, _ in h.take() if isinstance(m, Response)]
    assert update_ok.status == 200 and update_ok.body == b""
    h.feed(in_dialog("UPDATE", 4), CALLER)  # older than what was seen: RFC 3261 12.2.2
    assert statuses(h.take(), CALLER) == [500]
    callee_refresh = (
        f"UPDATE sip:203.0.113.5 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.1:5060;branch="
        f"z9hG4bK-cu1\r\nFrom: <sip:alice@uas.example.com>;tag=callee\r\n"
        f"To: {out.headers.get('From')}\r\nCall-ID: {out.call_id}\r\nCSeq: 9 UPDATE\r\n"
        "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()
    h.feed(callee_refresh, peer)
    assert statuses(h.take(), peer) == [200]
    assert len(h.b2bua.calls) == 1
    h.feed(in_dialog("INVITE", 7).replace(b"in-call-1", b"unknown-call"), CALLER)
    assert 481 in statuses(h.take(), CALLER)


def test_update_outside_a_dialog_is_481_not_a_call() -> None:
    h = Harness([FIRST])
    h.feed(invite().replace(b"INVITE sip", b"UPDATE sip", 1).replace(b"1 INVITE", b"1 UPDATE"),
           CALLER)
    assert statuses(h.take(), CALLER) == [481]
    assert h.b2bua.calls == {}


async def test_a_failure_while_setting_up_the_call_still_answers_the_caller() -> None:
    """Whatever breaks between admission and placing the call (here the resolver), the
    caller gets a final 500 at once instead of waiting out its transaction."""

    class Broken:
        def resolve_now(self, uri: SipUri) -> list[Target] | None:
            return None

        async def resolve(self, uri: SipUri, *, federation: bool = False) -> list[Target]:
            raise RuntimeError("resolver bug")

    h = Harness([FIRST])
    h.use_resolver(Broken())
    h.feed(invite(), CALLER)
    await h.settle()
    sent = h.take()
    assert statuses(sent, CALLER) == [100, 500]
    assert h.b2bua.calls == {}


async def test_a_rules_bandwidth_cap_reaches_both_sides_of_an_anchored_call() -> None:
    """Without transcoding the cap is asked of each sender: the callee's offer and the
    caller's answer both say b=AS at the rule's limit."""
    base = free_port()
    rules = RULES + "max_bandwidth_kbps = 512\n"
    h = Harness([FIRST], ports=PortAllocator(base, base + 20), address="127.0.0.1",
                rules=rules)
    body = sdp_body(4000)
    h.feed(invite_with(body), CALLER)
    for _ in range(20):
        await h.settle()
    out, peer = outbound(h.take(), "INVITE")
    assert b"b=AS:512" in out.body
    h.feed(make_response(out, 200, to_tag="callee", headers=(("Contact", "<sip:a@x>"),),
                         body=sdp_body(5000), content_type="application/sdp"), peer)
    answer = next(m for m, _ in h.take() if isinstance(m, Response) and m.status == 200)
    assert b"b=AS:512" in answer.body
    h.feed((f"BYE sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5062;"
            f"branch=z9hG4bK-bwbye;rport\r\nFrom: <sip:bob@example.org>;tag=caller\r\n"
            f"To: <sip:alice@gw.example.com>;tag={answer.to.tag}\r\nCall-ID: in-call-1\r\n"
            "CSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode(), CALLER)
    assert h.b2bua.calls == {}


async def test_a_destination_that_is_this_node_is_refused_as_a_loop() -> None:
    """A rule whose destination resolves to one of the node's own listeners (an empty
    replace on sip:x@<node address>) would route the call to itself until Max-Forwards ran
    out; it is refused with 482 at once."""
    h = Harness([Target("UDP", "203.0.113.5", "203.0.113.5", 5060)])
    h.feed(invite(), CALLER)
    await h.settle()
    sent = h.take()
    assert statuses(sent, CALLER) == [100, 482]
    refused = next(m for m, _ in sent if isinstance(m, Response) and m.status == 482)
    assert "routes back to this node" in refused.reason
    assert not [m for m, _ in sent if isinstance(m, Request) and m.method == "INVITE"]


async def test_a_target_the_transport_cannot_reach_fails_over_at_once() -> None:
    """A refused connection (reported by the transport) moves the call to the next RFC 3263
    target straight away; with none left the caller gets 503, not a 408 after 32 s."""
    h = Harness([FIRST, SECOND])
    h.feed(invite(), CALLER)
    await h.settle()
    _, peer = outbound(h.take(), "INVITE")
    h.collect(h.ep.transport_failed(peer, 0.1))
    sent = h.take()
    _, second = outbound(sent, "INVITE")
    assert second == far(SECOND) and statuses(sent, CALLER) == []
    h.collect(h.ep.transport_failed(second, 0.2))
    assert statuses(h.take(), CALLER) == [503]


async def test_with_anchoring_off_sip_calls_are_signalling_only() -> None:
    """`global.anchor_sip_media = false`: the SDP goes end to end unchanged and no media
    port is taken, for endpoints that reach each other directly."""
    base = free_port()
    ports = PortAllocator(base, base + 20)
    h = Harness([FIRST], ports=ports, address="127.0.0.1")
    h.configure(anchor_sip_media=False)
    body = sdp_body(4000)
    h.feed(invite_with(body), CALLER)
    for _ in range(20):
        await h.settle()
    out, peer = outbound(h.take(), "INVITE")
    assert out.body == body and ports.in_use == set()
    callee_sdp = sdp_body(5000)
    h.feed(make_response(out, 200, to_tag="callee", headers=(("Contact", "<sip:a@x>"),),
                         body=callee_sdp, content_type="application/sdp"), peer)
    answer = next(m for m, _ in h.take() if isinstance(m, Response) and m.status == 200)
    assert answer.body == callee_sdp and ports.in_use == set()


class SlowDns(FakeResolver):
    """A look-up that answers only when told to: the caller can give up while it runs."""

    def __init__(self, targets: list[Target]) -> None:
        super().__init__(targets)
        self.answer = asyncio.Event()

    async def resolve(self, uri: SipUri, *, federation: bool = False) -> list[Target]:
        await self.answer.wait()
        return await super().resolve(uri)


async def test_a_call_cancelled_during_its_dns_look_up_reserves_no_relay_ports() -> None:
    """The relay's ports are taken only for a call still in progress: one the caller
    cancelled while its target was being looked up must not hold ports (and sockets) that
    nothing would ever release."""
    base = free_port()
    ports = PortAllocator(base, base + 20)
    h = Harness([FIRST], ports=ports, address="127.0.0.1")
    dns = SlowDns([FIRST])
    h.use_resolver(dns)
    h.feed(invite_with(sdp_body(base + 100)), CALLER)
    await h.settle()
    h.feed(cancel_of_invite(), CALLER)
    assert sorted(statuses(h.take(), CALLER)) == [100, 200, 487]
    dns.answer.set()
    for _ in range(5):
        await h.settle()
    assert ports.in_use == set()
    assert not [m for m, _ in h.take() if isinstance(m, Request)]  # and no INVITE goes out
