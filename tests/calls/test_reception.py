"""The Virtual Reception and the PIN prompt through call control, with the real adapter and
real media sockets: prompts played (from a theme of 20 ms prompts, so a test does not wait
on speech), digits by SIP INFO, the caller handed on by REFER to the alias entered (with its
PIN), re-prompts, the goodbye after three failures, and brute-force lock-out by source."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.config.load import parse_text
from gateway.sip.message import Request, Response, make_response
from gateway.transport.peer import Peer
from ice.ports import PortAllocator
from routing.engine import Router
from tests.kit.calls import CALLER, Harness, invite_with, sdp_body, statuses
from tests.kit.reception import services, short_theme
from tests.peers import free_port

PCMU = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        b"m=audio 5004 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
        b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n")


def reception(tmp_path: Path) -> Harness:
    config = parse_text(services(short_theme(tmp_path)), "t.toml", base_dir=None)
    base = free_port()
    h = Harness(None, ports=PortAllocator(base, base + 20), address="127.0.0.1")
    h.configure(router=Router(config.services, config.routing_rules))
    return h


def dialled(alias: str, body: bytes = PCMU, call_id: str = "in-call-1") -> bytes:
    return invite_with(body).replace(b"alice@gw.example.com", alias.encode()).replace(
        b"in-call-1", call_id.encode()).replace(b"z9hG4bK-in1", f"z9hG4bK-{call_id}".encode())


def info(n: int, key: str, to_tag: str, call_id: str = "in-call-1") -> bytes:
    body = f"Signal={key}\r\nDuration=160\r\n"
    return (f"INFO sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5062;"
            f"branch=z9hG4bK-info{n}\r\nFrom: <sip:bob@example.org>;tag=caller\r\n"
            f"To: <sip:reception@gw.example.com>;tag={to_tag}\r\nCall-ID: {call_id}\r\n"
            f"CSeq: {n + 1} INFO\r\nContent-Type: application/dtmf-relay\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}").encode()


async def answered(h: Harness, alias: str = "reception@127.0.0.1") -> str:
    h.feed(dialled(alias), CALLER)
    await h.settle()
    sent = h.take()
    assert statuses(sent, CALLER) == [100, 200]
    ok = next(m for m, _ in sent if isinstance(m, Response) and m.status == 200)
    assert b"RTP/AVP 0 101" in ok.body and ok.to.tag
    return ok.to.tag


async def keys(h: Harness, tag: str, digits: str, first: int = 1) -> None:
    for n, key in enumerate(digits, first):
        h.feed(info(n, key, tag), CALLER)
        assert 200 in statuses(h.take(), CALLER)


async def next_request(h: Harness, method: str, within: float = 3.0) -> Request:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        for message, _ in h.take():
            if isinstance(message, Request) and message.method == method:
                return message
        await asyncio.sleep(0.02)
    raise AssertionError(f"no {method} within {within} s")


async def test_the_number_entered_hands_the_caller_on_to_that_room(tmp_path: Path) -> None:
    h = reception(tmp_path)
    tag = await answered(h)
    await keys(h, tag, "1234#")
    refer = await next_request(h, "REFER")
    assert refer.headers.get("Refer-To") == "<sip:1234@127.0.0.1>"
    assert refer.call_id == "in-call-1"
    h.feed(make_response(refer, 202), CALLER)
    notify = (f"NOTIFY sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5062;"
              f"branch=z9hG4bK-n1\r\nFrom: <sip:bob@example.org>;tag=caller\r\n"
              f"To: <sip:reception@gw.example.com>;tag={tag}\r\nCall-ID: in-call-1\r\n"
              "CSeq: 20 NOTIFY\r\nEvent: refer\r\nSubscription-State: terminated\r\n"
              "Content-Type: message/sipfrag\r\nContent-Length: 16\r\n\r\nSIP/2.0 200 OK\r\n"
              ).encode()
    h.feed(notify, CALLER)
    sent = h.take()
    assert 200 in statuses(sent, CALLER)
    [bye] = [m for m, _ in sent if isinstance(m, Request) and m.method == "BYE"]
    assert "handed on to 1234: 200" in (bye.headers.get("Reason") or "")
    assert h.b2bua.calls == {}


async def test_an_unknown_number_is_prompted_again_and_three_end_the_call(
        tmp_path: Path) -> None:
    h = reception(tmp_path)
    tag = await answered(h)
    await keys(h, tag, "999#", first=1)
    await asyncio.sleep(0.2)
    assert h.b2bua.calls  # still there: asked again
    await keys(h, tag, "998#", first=10)
    await keys(h, tag, "997#", first=20)
    bye = await next_request(h, "BYE")
    assert "number not found, 3 times" in (bye.headers.get("Reason") or "")


async def test_a_pin_protected_room_asks_for_its_pin_and_refers_with_it(tmp_path: Path) -> None:
    h = reception(tmp_path)
    tag = await answered(h)
    await keys(h, tag, "5555#")
    await asyncio.sleep(0.1)
    await keys(h, tag, "1357#", first=10)
    refer = await next_request(h, "REFER")
    assert refer.headers.get("Refer-To") == "<sip:5555*1357@127.0.0.1>"


async def test_wrong_pins_lock_the_source_out_and_not_another(tmp_path: Path) -> None:
    h = reception(tmp_path)
    h.configure(pins=h.b2bua.settings.pins.__class__(attempts=3, window=600, lockout=600))
    for n in range(3):
        h.feed(dialled("5555*0000@127.0.0.1", call_id=f"wrong-{n}"), CALLER)
        await h.settle()
        sent = h.take()
        refused = next(m for m, _ in sent if isinstance(m, Response) and m.status >= 400)
        assert refused.status == 403 and "wrong PIN" in refused.reason
    h.configure(location="")  # a reload: what an attacker has tried is not forgotten
    h.feed(dialled("5555*1357@127.0.0.1", call_id="right-but-locked"), CALLER)
    await h.settle()
    locked = next(m for m, _ in h.take() if isinstance(m, Response) and m.status >= 400)
    assert locked.status == 403 and "too many wrong PINs from 192.0.2.10" in locked.reason
    other = Peer("UDP", "192.0.2.77", 5062)
    h.feed(dialled("5555*1357@127.0.0.1", call_id="another-source").replace(
        b"192.0.2.10:5062", b"192.0.2.77:5062"), other)
    await h.settle()
    answers = [m.status for m, p in h.take() if isinstance(m, Response) and p == other]
    assert 403 not in answers  # its PIN opens the room: the call goes on toward it


async def test_a_room_dialled_without_its_pin_is_asked_for_it(tmp_path: Path) -> None:
    h = reception(tmp_path)
    tag = await answered(h, "5555@127.0.0.1")
    await keys(h, tag, "1357#")
    refer = await next_request(h, "REFER")
    assert refer.headers.get("Refer-To") == "<sip:5555*1357@127.0.0.1>"


async def test_a_caller_that_refuses_refer_is_told_goodbye(tmp_path: Path) -> None:
    h = reception(tmp_path)
    tag = await answered(h)
    await keys(h, tag, "1234#")
    refer = await next_request(h, "REFER")
    h.feed(make_response(refer, 405), CALLER)
    bye = await next_request(h, "BYE")
    assert "could not be handed on (REFER: 405" in (bye.headers.get("Reason") or "")


async def test_srtp_callers_are_refused_with_the_reason(tmp_path: Path) -> None:
    h = reception(tmp_path)
    h.feed(dialled("reception@127.0.0.1", sdp_body(5004).replace(b"RTP/AVP",
                                                                        b"RTP/SAVP")), CALLER)
    await h.settle()
    assert statuses(h.take(), CALLER) == [100, 488]
