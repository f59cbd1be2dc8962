"""An ended call is freed by reference counting: nothing the transactions keep for their
32 s of Timers J/K/L/M points back at it, so the cyclic GC has no calls to find."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from gateway.calls.sip_side import SipSide
from gateway.sip.message import Response, make_response
from ice.ports import PortAllocator
from tests.kit.calls import (
    CALLER,
    FIRST,
    Harness,
    invite_with,
    outbound,
    sdp_body,
)
from tests.peers import free_port


@pytest.fixture
def no_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def bye_from_caller(tag: str) -> bytes:
    return (f"BYE sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5062;"
            f"branch=z9hG4bK-bye1;rport\r\nFrom: <sip:bob@example.org>;tag=caller\r\n"
            f"To: <sip:alice@gw.example.com>;tag={tag}\r\nCall-ID: in-call-1\r\n"
            "CSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()


@pytest.mark.parametrize("anchored", [False, True], ids=["signalling only", "media anchored"])
async def test_an_ended_call_needs_no_garbage_collection(no_gc: None, anchored: bool) -> None:
    base = free_port()
    ports = PortAllocator(base, base + 20) if anchored else None
    h = Harness([FIRST], ports=ports, address="127.0.0.1")
    h.feed(invite_with(sdp_body(4000)), CALLER)
    for _ in range(20):
        await h.settle()
    out, peer = outbound(h.take(), "INVITE")
    h.feed(make_response(out, 200, to_tag="callee", body=sdp_body(5000),
                         content_type="application/sdp",
                         headers=(("Contact", "<sip:a@198.51.100.1>"),)), peer)
    answer = next(m for m, _ in h.take() if isinstance(m, Response) and m.status == 200)
    [call] = h.b2bua.calls.values()
    gone = weakref.ref(call)
    bridge = call.media.bridge if isinstance(call.media, SipSide) else None
    media = [weakref.ref(e) for e in (bridge.caller + bridge.callee)] if bridge else []
    del bridge
    assert len(media) == (2 if anchored else 0)
    del call
    h.feed(bye_from_caller(answer.to.tag or ""), CALLER)
    our_bye, bye_peer = outbound(h.take(), "BYE")
    h.feed(make_response(our_bye, 200), bye_peer)
    h.feed(bye_from_caller(answer.to.tag or ""), CALLER)  # a retransmission, absorbed
    await h.settle()
    assert h.b2bua.calls == {} and len(h.ep.transactions) == 4
    assert gone() is None, [type(r).__name__ for r in gc.get_referrers(gone())]
    assert [ref for ref in media if ref() is not None] == []  # media plane freed as well
