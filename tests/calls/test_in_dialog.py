"""Inside a connected call, with a fake clock: session timers on each leg (the gateway
refreshes what it must, a call outlives Lync's 30-minute refresh, a leg that stops
refreshing or answering ends both legs), session changes carried to the other leg (hold,
a new address through the relay, 491 while one is in flight), and the INVITE retried after
415 (multipart) and 422 (interval too small)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.calls.cdr import CdrStore
from gateway.sip.message import Message, Request, Response, make_response
from gateway.sip.session_timer import TimerPolicy
from gateway.transport.peer import Peer
from ice.ports import PortAllocator
from sdp.parse import parse_sdp
from tests.kit.calls import (
    CALLER,
    FIRST,
    Harness,
    invite,
    outbound,
    phone,
    sdp_body,
    statuses,
)
from tests.peers import free_port


def offer(port: int = 4000, version: int = 1, direction: str = "sendrecv") -> bytes:
    return sdp_body(port).replace(b"o=- 1 1", b"o=- 1 %d" % version).replace(
        b"a=sendrecv", b"a=" + direction.encode())


def with_body(data: bytes, body: bytes) -> bytes:
    head, _, _ = data.partition(b"Content-Length:")
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


class Call:
    """A call set up through the harness: the callee's INVITE and our 2xx to the caller."""

    def __init__(self, out: Request, peer: Peer, answer: Response) -> None:
        self.out, self.peer, self.answer = out, peer, answer

    @classmethod
    async def up(cls, h: Harness, inbound: bytes, answer_headers: tuple[tuple[str, str], ...],
                 callee_sdp: bytes = b"") -> Call:
        h.feed(inbound, CALLER)
        for _ in range(20):
            await h.settle()
        out, peer = outbound(h.take(), "INVITE")
        h.feed(make_response(out, 200, to_tag="callee",
                             headers=(("Contact", "<sip:a@198.51.100.1>"), *answer_headers),
                             body=callee_sdp or sdp_body(5000), content_type="application/sdp"),
               peer)
        answer = next(m for m, _ in h.take() if isinstance(m, Response) and m.status == 200)
        return cls(out, peer, answer)

    def from_caller(self, method: str, cseq: int, extra: str = "", body: bytes = b"") -> bytes:
        return (f"{method} sip:gw@203.0.113.5 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5062;"
                f"branch=z9hG4bK-c{cseq}{method};rport\r\n"
                "From: <sip:bob@example.org>;tag=caller\r\n"
                f"To: <sip:alice@gw.example.com>;tag={self.answer.to.tag}\r\n"
                f"Call-ID: in-call-1\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n"
                "Contact: <sip:bob@192.0.2.10:5062>\r\n"
                + ("Content-Type: application/sdp\r\n" if body else "")
                + f"{extra}Content-Length: {len(body)}\r\n\r\n").encode() + body


LYNC_LIKE = "Supported: timer\r\nSession-Expires: 1800\r\n"


def harness(tmp_path: Path | None = None, **kw: object) -> Harness:
    cdrs = CdrStore(tmp_path / "cdr.sqlite3") if tmp_path else None
    h = Harness([FIRST], cdrs, **kw)  # type: ignore[arg-type]
    h.b2bua.session_timers = lambda: TimerPolicy(1800, 90)
    return h


def requests(sent: list[tuple[Message, Peer]], method: str) -> list[tuple[Request, Peer]]:
    return [(m, p) for m, p in sent if isinstance(m, Request) and m.method == method]


async def test_each_leg_gets_its_own_timer_and_the_call_outlives_30_minutes() -> None:
    """The caller (Lync-like: Supported timer) refreshes its leg; the callee's 2xx makes the
    gateway the refresher of the other leg, which it refreshes at half the interval with
    UPDATE (the callee allows it). Refreshes from the caller reset its leg's expiry."""
    h = harness()
    call = await Call.up(h, with_body(invite(), b"v=0\r\ns=x\r\n").replace(
        b"Max-Forwards: 70\r\n", f"Max-Forwards: 70\r\n{LYNC_LIKE}".encode()),
        (("Session-Expires", "1800;refresher=uac"), ("Allow", "INVITE, ACK, BYE, UPDATE")))
    assert call.out.headers.get("Session-Expires") == "1800"
    assert "timer" in call.out.tokens("supported")
    assert call.answer.headers.get("Session-Expires") == "1800;refresher=uac"
    assert call.answer.headers.get("Require") == "timer"
    assert h.b2bua.next_deadline() == 900.0  # the transactions have their own

    h.collect(h.ep.handle_timeout(900.0))
    [(update, peer)] = requests(h.take(), "UPDATE")
    assert peer == call.peer and update.call_id == call.out.call_id
    assert update.headers.get("Session-Expires") == "1800;refresher=uac" and not update.body
    h.feed(make_response(update, 200, headers=(("Session-Expires", "1800;refresher=uac"),)),
           peer, 900.1)
    h.feed(call.from_caller("INVITE", 2, LYNC_LIKE), CALLER, 1700.0)  # Lync's refresh
    assert statuses(h.take(), CALLER) == [100, 200]
    for now in (1800.0, 1860.0):  # past 30 minutes: the second refresh, due at 1800.1
        h.collect(h.ep.handle_timeout(now))
    [(second, _)] = requests(h.take(), "UPDATE")
    h.feed(make_response(second, 200, headers=(("Session-Expires", "1800;refresher=uac"),)),
           peer, 1860.1)
    h.collect(h.ep.handle_timeout(2500.0))  # past the caller's first expiry (1768)
    assert requests(h.take(), "BYE") == [] and len(h.b2bua.calls) == 1


async def test_a_caller_that_stops_refreshing_ends_both_legs(tmp_path: Path) -> None:
    h = harness(tmp_path)
    call = await Call.up(h, with_body(invite(), b"v=0\r\ns=x\r\n").replace(
        b"Max-Forwards: 70\r\n", f"Max-Forwards: 70\r\n{LYNC_LIKE}".encode()),
        (("Session-Expires", "1800;refresher=uas"),))
    assert h.b2bua.next_deadline() == 1800.0 - 32
    h.collect(h.ep.handle_timeout(1767.0))
    assert h.take() == []
    h.collect(h.ep.handle_timeout(1768.0))
    byes = requests(h.take(), "BYE")
    assert {p for _, p in byes} == {CALLER, call.peer}
    assert all("session expired" in (m.headers.get("Reason") or "") for m, _ in byes)
    assert h.b2bua.calls == {}
    assert h.cdrs is not None
    [cdr] = h.cdrs.recent()
    assert cdr["end_cause"] == "session expired: no refresh from the caller in 1800 s"
    assert h.b2bua.next_deadline() is None


async def test_a_refresh_the_callee_never_answers_ends_the_call() -> None:
    """No UPDATE in the callee's Allow: the refresh is a re-INVITE with the SDP that leg
    already has; when it times out (Timer B) both legs are hung up."""
    h = harness()
    call = await Call.up(h, with_body(invite(), b"v=0\r\ns=x\r\n"),
                         (("Session-Expires", "120;refresher=uac"),))
    h.collect(h.ep.handle_timeout(60.0))
    [(reinvite, _)] = requests(h.take(), "INVITE")
    assert reinvite.body == call.out.body and reinvite.cseq.seq == 2
    deadline = h.ep.next_deadline()
    assert deadline is not None and deadline < 60.0 + 32  # retransmissions (Timer A)
    for now in range(61, 100):
        h.collect(h.ep.handle_timeout(float(now)))
    byes = requests(h.take(), "BYE")
    assert {p for _, p in byes} == {CALLER, call.peer}
    assert h.b2bua.calls == {}


async def test_a_481_to_our_refresh_ends_the_call() -> None:
    h = harness()
    call = await Call.up(h, with_body(invite(), b"v=0\r\ns=x\r\n"),
                         (("Session-Expires", "120;refresher=uac"),))
    h.collect(h.ep.handle_timeout(60.0))
    [(reinvite, peer)] = requests(h.take(), "INVITE")
    h.feed(make_response(reinvite, 481), peer, 60.2)
    byes = requests(h.take(), "BYE")
    assert {p for _, p in byes} == {CALLER, call.peer}
    assert "481" in (byes[0][0].headers.get("Reason") or "")


async def test_a_caller_interval_below_min_se_gets_422() -> None:
    h = harness()
    h.feed(with_body(invite(), b"v=0\r\ns=x\r\n").replace(
        b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\nSupported: timer\r\n"
                                 b"Session-Expires: 30\r\n"), CALLER)
    sent = h.take()
    assert statuses(sent, CALLER) == [100, 422]
    refused = next(m for m, _ in sent if isinstance(m, Response) and m.status == 422)
    assert refused.headers.get("Min-SE") == "90" and h.b2bua.calls == {}


async def test_422_from_the_callee_is_retried_with_its_min_se() -> None:
    h = harness()
    h.feed(with_body(invite(), b"v=0\r\ns=x\r\n"), CALLER)
    await h.settle()
    first, peer = outbound(h.take(), "INVITE")
    h.feed(make_response(first, 422, to_tag="x", headers=(("Min-SE", "3600"),)), peer)
    sent = h.take()
    second, _ = outbound(sent, "INVITE")
    assert second.headers.get("Session-Expires") == "3600" and statuses(sent, CALLER) == []


async def test_415_to_a_multipart_offer_is_retried_with_the_sdp_part_alone() -> None:
    lync_body = (b"--b1\r\nContent-Type: application/sdp\r\nContent-Disposition: session; "
                 b"handling=optional; ms-proxy-2007fallback\r\n\r\n" + offer(4000)
                 + b"\r\n--b1\r\nContent-Type: application/sdp\r\n\r\n" + offer(4002)
                 + b"\r\n--b1--\r\n")
    data = with_body(invite(), lync_body).replace(
        b"Content-Type: application/sdp", b'Content-Type: multipart/alternative;boundary="b1"', 1)
    h = harness()
    h.feed(data, CALLER)
    await h.settle()
    first, peer = outbound(h.take(), "INVITE")
    assert first.content_type is not None and first.content_type.type.startswith("multipart")
    h.feed(make_response(first, 415, to_tag="x", headers=(("Accept", "application/sdp"),)),
           peer)
    second, _ = outbound(h.take(), "INVITE")
    assert second.headers.get("Content-Type") == "application/sdp"
    assert parse_sdp(second.body).media[0].port == 4002  # the RFC 5245 part, not draft-6
    h.feed(make_response(second, 415, to_tag="y"), peer)
    assert statuses(h.take(), CALLER) == [415]  # no second retry


async def test_hold_from_the_caller_is_carried_to_the_callee_and_answered_back() -> None:
    h = harness()
    call = await Call.up(h, with_body(invite(), offer()), ())
    hold = call.from_caller("INVITE", 2, body=offer(version=2, direction="sendonly"))
    h.feed(hold, CALLER, 10.0)
    sent = h.take()
    assert statuses(sent, CALLER) == [100]  # answered when the callee answers
    [(relayed, peer)] = requests(sent, "INVITE")
    assert peer == call.peer and relayed.call_id == call.out.call_id
    assert b"a=sendonly" in relayed.body and relayed.cseq.seq == 2
    h.feed(call.from_caller("INVITE", 3, body=offer(version=3)), CALLER, 10.1)
    assert statuses(h.take(), CALLER) == [100, 491]  # one offer at a time
    held = sdp_body(5000).replace(b"a=sendrecv", b"a=recvonly").replace(b"1 1 IN", b"1 2 IN")
    h.feed(make_response(relayed, 200, headers=(("Contact", "<sip:a@198.51.100.1>"),),
                         body=held, content_type="application/sdp"), peer, 10.2)
    sent = h.take()
    [ok] = [m for m, p in sent if isinstance(m, Response) and p == CALLER]
    assert ok.status == 200 and ok.cseq.seq == 2 and b"a=recvonly" in ok.body
    assert [m.method for m, _ in sent if isinstance(m, Request)] == ["ACK"]
    # The same offer again is a refresh now: answered here with what the caller has.
    h.feed(call.from_caller("INVITE", 4, body=offer(version=2, direction="sendonly")),
           CALLER, 20.0)
    sent = h.take()
    assert requests(sent, "INVITE") == []
    [refreshed] = [m for m, _ in sent if isinstance(m, Response) and m.status == 200]
    assert refreshed.body == held


async def test_a_session_change_the_other_leg_refuses_is_relayed_and_the_call_stays() -> None:
    h = harness()
    call = await Call.up(h, with_body(invite(), offer()), ())
    h.feed(call.from_caller("INVITE", 2, body=offer(version=2, direction="inactive")), CALLER)
    [(relayed, peer)] = requests(h.take(), "INVITE")
    h.feed(make_response(relayed, 488, "Not Acceptable Here"), peer)
    assert 488 in statuses(h.take(), CALLER) and len(h.b2bua.calls) == 1
    h.feed(call.from_caller("INVITE", 3, body=offer(version=3, direction="inactive")), CALLER)
    [(again, _)] = requests(h.take(), "INVITE")
    h.feed(make_response(again, 481), peer)
    assert requests(h.take(), "BYE") and h.b2bua.calls == {}


async def test_a_new_address_in_a_re_offer_moves_the_relay(tmp_path: Path) -> None:
    """Anchored media: the callee gets the relay's address in the re-offer, and media from
    the callee now reaches the caller's new port."""
    base = free_port()
    ports = PortAllocator(base, base + 20)
    old_sock, _, old_port = await phone()
    new_sock, moved, new_port = await phone()
    callee_sock, _, callee_port = await phone()
    h = harness(ports=ports, address="127.0.0.1")
    call = await Call.up(h, with_body(invite(), offer(old_port)), (),
                         callee_sdp=sdp_body(callee_port))
    toward_callee = parse_sdp(call.out.body).media[0].port
    h.feed(call.from_caller("INVITE", 2, body=offer(new_port, version=2)), CALLER)
    [(relayed, peer)] = requests(h.take(), "INVITE")
    reoffer = parse_sdp(relayed.body)
    assert reoffer.media[0].port == toward_callee
    assert reoffer.connection_address(reoffer.media[0]) == "127.0.0.1"
    h.feed(make_response(relayed, 200, headers=(("Contact", "<sip:a@127.0.0.1>"),),
                         body=sdp_body(callee_port).replace(b"1 1 IN", b"1 2 IN"),
                         content_type="application/sdp"), peer)
    [ok] = [m for m, _ in h.take() if isinstance(m, Response) and m.status == 200]
    assert parse_sdp(ok.body).media[0].port == parse_sdp(call.answer.body).media[0].port
    callee_sock.sendto(b"\x80\x09\x00\x01" + bytes(8) + b"moved", ("127.0.0.1", toward_callee))
    assert (await asyncio.wait_for(moved.got.get(), 5))[12:] == b"moved"
    h.feed(call.from_caller("BYE", 3), CALLER)
    await h.settle()
    assert ports.in_use == set()
    for sock in (old_sock, new_sock, callee_sock):
        sock.close()



async def test_a_session_change_in_flight_when_the_call_ends_is_answered_487() -> None:
    h = harness()
    call = await Call.up(h, with_body(invite(), offer()), ())
    h.feed(call.from_caller("INVITE", 2, body=offer(version=2, direction="sendonly")), CALLER)
    h.take()
    bye = (f"BYE sip:203.0.113.5 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.1:5060;"
           f"branch=z9hG4bK-cb487\r\nFrom: <sip:alice@uas.example.com>;tag=callee\r\n"
           f"To: {call.out.headers.get('From')}\r\nCall-ID: {call.out.call_id}\r\n"
           "CSeq: 5 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()
    h.feed(bye, call.peer)
    sent = h.take()
    assert [m.cseq.seq for m, p in sent if isinstance(m, Response) and p == CALLER
            and m.status == 487] == [2]
    assert requests(sent, "BYE")[0][1] == CALLER
