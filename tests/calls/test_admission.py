"""INVITE admission through the endpoint: 100 Trying first, the routing decision answered
(404 with its reason, 501 naming the decision the missing B2BUA cannot carry out yet), the
arriving protocol detected from Lync's headers, and 481 for unknown dialogs."""

from __future__ import annotations

from pathlib import Path

from gateway.calls.admission import Admission
from gateway.calls.protocol import arriving_protocol
from gateway.calls.settings import CallLimits, CallSettings
from gateway.config.load import parse_text
from gateway.sip.endpoint import Endpoint, EndpointSettings
from gateway.sip.message import Request, Response
from gateway.sip.parse import parse_message
from gateway.sip.transaction_machines import Send
from gateway.transport.peer import Peer
from routing.engine import Router
from tests.routing.conftest import GUIDE

FIXTURES = Path(__file__).parent.parent / "sip" / "fixtures"
TLS = Peer("TLS", "10.0.1.5", 5061, connection=1)


def endpoint(text: str = GUIDE, location: str = "London") -> Endpoint:
    config = parse_text(text, "t.toml", base_dir=None)
    router = Router(config.services, config.routing_rules)
    admission = Admission(CallSettings(router=router, location=location))
    return Endpoint(EndpointSettings(server="lyncgate/test"), handler=admission)


def responses(ep: Endpoint, data: bytes, peer: Peer = TLS) -> list[Response]:
    out = []
    for event in ep.receive(data, peer, None, 0.0):
        if isinstance(event, Send):
            message = parse_message(event.data)
            assert isinstance(message, Response)
            out.append(message)
    return out


def invite(uri: str, to_tag: str = "", extra: str = "") -> bytes:
    tag = f";tag={to_tag}" if to_tag else ""
    return (
        f"INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/TLS 10.0.1.5:5061;branch=z9hG4bK-i1\r\n"
        f"From: <sip:ep@example.org>;tag=f\r\nTo: <{uri}>{tag}\r\nCall-ID: adm-1\r\n"
        f"CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContact: <sip:ep@10.0.1.5;transport=tls>\r\n"
        f"{extra}Content-Length: 0\r\n\r\n"
    ).encode()


def test_unknown_alias_gets_100_then_404_with_the_reason() -> None:
    out = responses(endpoint(), invite("sip:nobody@elsewhere.org"))
    assert [r.status for r in out] == [100, 404]
    assert "no routing rule matches 'nobody@elsewhere.org'" in out[1].reason
    assert out[1].to.tag and out[1].headers.get("Server") == "lyncgate/test"


def test_lync_invite_is_mssip_and_its_routed_decision_is_named_in_the_501() -> None:
    data = (FIXTURES / "lync_invite.txt").read_bytes().replace(
        b"INVITE sip:meet.alice@vc.example.com", b"INVITE sip:bob@example.com"
    )
    request = parse_message(data)
    assert isinstance(request, Request) and arriving_protocol(request) == "mssip"
    out = responses(endpoint(), data)
    assert [r.status for r in out] == [100, 501]
    assert "'Route calls from Lync / Skype for Business' routes to sip:bob@example.com" in (
        out[1].reason
    )
    assert "not built yet" in out[1].reason


def test_a_polycom_invite_is_plain_sip() -> None:
    request = parse_message((FIXTURES / "polycom_invite.txt").read_bytes())
    assert isinstance(request, Request) and arriving_protocol(request) == "sip"


def test_service_alias_is_recognised_before_rules() -> None:
    out = responses(endpoint(), invite("sip:meet.alice@example.com",
                                       extra="Ms-Conversation-ID: abc\r\n"))
    assert out[1].status == 501 and "vmr \"Alice's meeting room\"" in out[1].reason


def test_reinvite_for_an_unknown_dialog_gets_481() -> None:
    out = responses(endpoint(), invite("sip:bob@example.com", to_tag="old"))
    assert [r.status for r in out] == [100, 481]


def test_caller_text_cannot_break_the_status_line() -> None:
    out = responses(endpoint(), invite("sip:%0d%0aX:%20y@elsewhere.org"))
    assert out[-1].status == 404 and "\r" not in out[-1].reason and len(out[-1].reason) <= 160


def test_invite_is_in_allow() -> None:
    assert "INVITE" in endpoint().allow


def test_the_cluster_limit_counts_the_calls_of_the_other_nodes_of_the_location() -> None:
    """`cluster.max_calls`: this node's calls plus what the other live nodes of its location
    last reported reach the limit, and a new call is refused though the node has room."""
    config = parse_text(GUIDE, "t.toml", base_dir=None)
    router = Router(config.services, config.routing_rules)
    admission = Admission(CallSettings(router=router, location="London",
                                       limits=CallLimits(cluster_max_calls=10)))
    assert admission.overloaded(0.0, 4) is None
    admission.elsewhere = lambda: 6
    assert admission.overloaded(0.0, 3) is None
    refused = admission.overloaded(0.0, 4)
    assert refused is not None and refused.startswith("cluster call limit reached: 10")
