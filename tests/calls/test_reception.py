"""The Virtual Reception and the PIN prompt through call control, with the real adapter and
real media sockets: prompts played (from a theme of 20 ms prompts, so a test does not wait
on speech), digits by SIP INFO, the caller handed on by REFER to the alias entered (with its
PIN) when its INVITE allows REFER, and by a leg of the node's own otherwise (or when the
REFER fails): that leg placed as a dialled alias, the caller re-INVITEd onto the relay
toward the callee and media flowing end to end, back at the prompts when the leg fails or
rings past its own set-up limit (cancelled then), cancelled when the caller hangs up first,
a re-offer meanwhile answered 491, ports freed, a leg whose look-up never ends counted as
stuck;
re-prompts, the goodbye after three
failures, and brute-force lock-out by source. Bad input: a flood of RFC 4733 keys, an entry
longer than any number, media that stops, a caller hanging up mid-prompt: each call ends
(or goes on) cleanly, its ports freed, nothing logged at error level."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.calls.placement import SETUP_LIMIT
from gateway.config.load import parse_text
from gateway.resolver.rfc3263 import Target
from gateway.sip.message import Request, Response, make_response
from gateway.sip.uri import SipUri
from gateway.transport.peer import Peer
from ice.ports import PortAllocator
from routing.engine import Router
from sdp.parse import parse_sdp
from tests.kit.calls import (
    CALLER,
    FakeResolver,
    Harness,
    far,
    invite_with,
    phone,
    sdp_body,
    statuses,
)
from tests.kit.media import rtp
from tests.kit.reception import event, services, short_theme
from tests.peers import free_port


def pcmu(port: int) -> bytes:
    return (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            b"m=audio %d RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
            b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n" % port)


PCMU = pcmu(5004)
# The room's MCU: its signalling is what the harness captures, its media a real socket.
ROOM = Target("UDP", "mcu.example.com", "127.0.0.1", 5999)


def reception(tmp_path: Path, targets: list[Target] | None = None) -> Harness:
    config = parse_text(services(short_theme(tmp_path)), "t.toml", base_dir=None)
    base = free_port()
    h = Harness(targets, ports=PortAllocator(base, base + 20), address="127.0.0.1")
    h.configure(router=Router(config.services, config.routing_rules))
    return h


def dialled(alias: str, body: bytes = PCMU, call_id: str = "in-call-1",
            refer: bool = True) -> bytes:
    """The caller's INVITE for `alias`; `refer`: its Allow lists REFER."""
    allow = b"Allow: INVITE, ACK, BYE, CANCEL, REFER, NOTIFY\r\n" if refer else (
        b"Allow: INVITE, ACK, BYE, CANCEL\r\n")
    return invite_with(body).replace(b"alice@gw.example.com", alias.encode()).replace(
        b"in-call-1", call_id.encode()).replace(b"z9hG4bK-in1", f"z9hG4bK-{call_id}".encode()
                                                ).replace(b"Max-Forwards", allow + b"Max-Forwards")


def from_caller(method: str, n: int, to_tag: str, content_type: str = "", body: str = "",
                call_id: str = "in-call-1") -> bytes:
    """A request of the caller's inside the reception's call, CSeq `n` + 1."""
    typed = f"Content-Type: {content_type}\r\n" if content_type else ""
    return (f"{method} sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5062;"
            f"branch=z9hG4bK-{method.lower()}{n}\r\nFrom: <sip:bob@example.org>;tag=caller\r\n"
            f"To: <sip:reception@gw.example.com>;tag={to_tag}\r\nCall-ID: {call_id}\r\n"
            f"CSeq: {n + 1} {method}\r\n{typed}"
            f"Content-Length: {len(body)}\r\n\r\n{body}").encode()


def info(n: int, key: str, to_tag: str, call_id: str = "in-call-1") -> bytes:
    return from_caller("INFO", n, to_tag, "application/dtmf-relay",
                       f"Signal={key}\r\nDuration=160\r\n", call_id)


async def answered(h: Harness, alias: str = "reception@127.0.0.1", body: bytes = PCMU,
                   refer: bool = True) -> str:
    h.feed(dialled(alias, body, refer=refer), CALLER)
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
    h.feed(refer_report(tag, 200), CALLER)
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


def refer_report(tag: str, status: int) -> bytes:
    """The caller's NOTIFY with the final status of the call it placed for our REFER."""
    return from_caller("NOTIFY", 20, tag, "message/sipfrag", f"SIP/2.0 {status} X\r\n"
                       ).replace(b"CSeq: 21 NOTIFY\r\n", b"CSeq: 21 NOTIFY\r\nEvent: refer\r\n"
                                 b"Subscription-State: terminated\r\n")


def room_answers(invite: Request, status: int, port: int = 0) -> Response:
    body = pcmu(port) if port else b""
    return make_response(invite, status, to_tag="room", headers=(
        ("Contact", "<sip:room@127.0.0.1:5999>"),), body=body,
        content_type="application/sdp" if body else None)


def audio_port(body: bytes) -> int:
    return parse_sdp(body).media[0].port


async def test_a_caller_without_refer_reaches_the_room_by_a_leg_of_ours(
        tmp_path: Path) -> None:
    caller_rtp, _, caller_port = await phone()
    room_rtp, room_media, room_port = await phone()
    h = reception(tmp_path, [ROOM])
    ports = h.b2bua.ctx.ports
    assert ports is not None
    tag = await answered(h, body=pcmu(caller_port), refer=False)
    [call] = h.b2bua.calls.values()
    at_reception = audio_port(call.caller.sdp_to)
    await keys(h, tag, "1234#")
    invite = await next_request(h, "INVITE")
    assert invite.uri_text == "sip:room1234@mcu.example.com"
    assert b"RTP/AVP 0 101" in invite.body and b"c=IN IP4 127.0.0.1" in invite.body
    h.feed(room_answers(invite, 200, room_port), far(ROOM))
    await h.settle()
    sent = h.take()
    assert any(isinstance(m, Request) and m.method == "ACK" and p == far(ROOM)
               for m, p in sent)
    [reinvite] = [m for m, p in sent if isinstance(m, Request) and m.method == "INVITE"
                  and p == CALLER]
    assert reinvite.call_id == "in-call-1" and reinvite.to.tag == "caller"
    assert b"o=lyncgate 1 2 IN IP4" in reinvite.body  # the reception's session, next version
    relay = audio_port(reinvite.body)
    assert relay != at_reception
    h.feed(make_response(reinvite, 200, body=pcmu(caller_port),
                         content_type="application/sdp"), CALLER)
    await h.settle()
    assert any(isinstance(m, Request) and m.method == "ACK" for m, p in h.take()
               if p == CALLER)
    assert at_reception not in ports.in_use  # the reception's media is closed
    caller_rtp.sendto(rtp(1), ("127.0.0.1", relay))
    assert (await asyncio.wait_for(room_media.got.get(), 2))[12:] == b"\xaa" * 160
    h.feed(from_caller("BYE", 30, tag), CALLER)
    await h.settle()
    assert any(isinstance(m, Request) and m.method == "BYE" for m, p in h.take()
               if p == far(ROOM))
    assert h.b2bua.calls == {} and not ports.in_use
    record = call.record
    assert (record.service, record.destination, record.out_call_id, record.end_cause) == (
        "Lobby", "sip:room1234@mcu.example.com", invite.call_id, "BYE from the caller")
    caller_rtp.close()
    room_rtp.close()


async def test_a_caller_that_refuses_refer_gets_a_leg_of_ours(tmp_path: Path) -> None:
    h = reception(tmp_path, [ROOM])
    tag = await answered(h)
    await keys(h, tag, "1234#")
    refer = await next_request(h, "REFER")
    h.feed(make_response(refer, 405), CALLER)
    invite = await next_request(h, "INVITE")
    assert invite.uri_text == "sip:room1234@mcu.example.com"


async def test_a_failed_call_for_our_refer_gets_a_leg_of_ours(tmp_path: Path) -> None:
    h = reception(tmp_path, [ROOM])
    tag = await answered(h)
    await keys(h, tag, "5555#")
    await asyncio.sleep(0.1)
    await keys(h, tag, "1357#", first=10)
    refer = await next_request(h, "REFER")
    h.feed(make_response(refer, 202), CALLER)
    h.feed(refer_report(tag, 403), CALLER)
    invite = await next_request(h, "INVITE")
    assert invite.uri_text == "sip:secret@mcu.example.com"  # the PIN was right


async def test_a_leg_that_fails_brings_the_caller_back_to_the_prompts(tmp_path: Path) -> None:
    h = reception(tmp_path, [ROOM])
    ports = h.b2bua.ctx.ports
    assert ports is not None
    tag = await answered(h, refer=False)
    held = set(ports.in_use)
    await keys(h, tag, "1234#")
    invite = await next_request(h, "INVITE")
    h.feed(room_answers(invite, 486), far(ROOM))
    await h.settle()
    assert 200 not in statuses(h.take(), CALLER)
    [call] = h.b2bua.calls.values()
    assert call.reception is not None and ports.in_use == held  # the leg's ports freed
    await asyncio.sleep(0.2)  # "that meeting was not found", then the number again
    await keys(h, tag, "1234#", first=10)
    again = await next_request(h, "INVITE")
    assert again.uri_text == invite.uri_text and again.call_id != invite.call_id


async def test_a_caller_hanging_up_while_the_room_rings_cancels_it(tmp_path: Path) -> None:
    h = reception(tmp_path, [ROOM])
    ports = h.b2bua.ctx.ports
    assert ports is not None
    tag = await answered(h, refer=False)
    await keys(h, tag, "1234#")
    invite = await next_request(h, "INVITE")
    h.feed(room_answers(invite, 180), far(ROOM))
    h.feed(from_caller("BYE", 30, tag), CALLER)
    await h.settle()
    sent = h.take()
    assert 200 in statuses(sent, CALLER)
    [cancel] = [m for m, p in sent if isinstance(m, Request) and m.method == "CANCEL"]
    assert cancel.call_id == invite.call_id
    assert h.b2bua.calls == {} and not ports.in_use


async def test_a_room_that_rings_past_the_set_up_limit_is_cancelled_and_prompts_resume(
        tmp_path: Path) -> None:
    """The caller's call is connected, so its own set-up limit no longer applies: the leg
    placed for it has one of its own, and at it the leg is cancelled and the caller hears
    that the meeting was not found, one failure more, and may enter a number again."""
    h = reception(tmp_path, [ROOM])
    tag = await answered(h, refer=False)
    await keys(h, tag, "1234#")
    invite = await next_request(h, "INVITE")
    h.feed(room_answers(invite, 180), far(ROOM))
    start = h.now
    h.tick(start + SETUP_LIMIT - 1)
    assert not any(isinstance(m, Request) and m.method == "CANCEL" for m, _ in h.take())
    h.tick(start + SETUP_LIMIT + 1)
    sent = h.take()
    [cancel] = [m for m, p in sent if isinstance(m, Request) and m.method == "CANCEL"]
    assert cancel.call_id == invite.call_id and not statuses(sent, CALLER)
    [call] = h.b2bua.calls.values()
    assert call.reception is not None and not call.handing_on
    assert call.reception.failures == 1 and call.record.out_call_id is None
    h.feed(make_response(cancel, 200), far(ROOM))
    h.feed(room_answers(invite, 487), far(ROOM))
    assert not any(p == CALLER for _, p in h.take())  # the caller's call goes on
    await asyncio.sleep(0.2)  # "that meeting was not found", then the number again
    await keys(h, tag, "1234#", first=10)
    again = await next_request(h, "INVITE")
    assert again.call_id != invite.call_id


async def test_a_leg_whose_set_up_never_finishes_ends_the_call_as_an_internal_error(
        tmp_path: Path) -> None:
    """A look-up for the leg that never returns (a bug below call control): at the leg's
    limit the call ends, counted as stuck, its ports freed."""

    class Hung(FakeResolver):
        async def resolve(self, uri: SipUri, *, federation: bool = False) -> list[Target]:
            await asyncio.Event().wait()
            return []

    h = reception(tmp_path, [ROOM])
    h.use_resolver(Hung([ROOM]))
    ports = h.b2bua.ctx.ports
    assert ports is not None
    tag = await answered(h, refer=False)
    await keys(h, tag, "1234#")
    await asyncio.sleep(0.2)  # "connecting", then the leg's look-up
    h.tick(h.now + SETUP_LIMIT + 1)
    [bye] = [m for m, _ in h.take() if isinstance(m, Request) and m.method == "BYE"]
    assert "internal error" in (bye.headers.get("Reason") or "")
    await h.settle()
    assert h.b2bua.calls == {} and h.b2bua.statistics().stuck == 1 and not ports.in_use
    for task in h.tasks:
        task.cancel()


async def test_an_offer_from_the_caller_while_the_room_rings_is_answered_491(
        tmp_path: Path) -> None:
    h = reception(tmp_path, [ROOM])
    tag = await answered(h, refer=False)
    await keys(h, tag, "1234#")
    await next_request(h, "INVITE")
    h.feed(from_caller("INVITE", 30, tag, "application/sdp", pcmu(5008).decode()).replace(
        b"o=- 1 1", b"o=- 1 2"), CALLER)
    assert statuses(h.take(), CALLER) == [100, 491]
    [call] = h.b2bua.calls.values()
    assert call.handing_on


async def test_srtp_callers_are_refused_with_the_reason(tmp_path: Path) -> None:
    h = reception(tmp_path)
    h.feed(dialled("reception@127.0.0.1", sdp_body(5004).replace(b"RTP/AVP",
                                                                        b"RTP/SAVP")), CALLER)
    await h.settle()
    assert statuses(h.take(), CALLER) == [100, 488]


def no_errors(out: str) -> None:
    assert "[error" not in out and "[critical" not in out, out[-3000:]


async def test_a_flood_of_keys_ends_the_call_cleanly(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Hundreds of RFC 4733 keys with no '#': each run past the longest entry is a failure,
    the third says goodbye; the rest of the flood is ignored."""
    caller_rtp, _, caller_port = await phone()
    h = reception(tmp_path)
    ports = h.b2bua.ctx.ports
    assert ports is not None
    await answered(h, body=pcmu(caller_port))
    [call] = h.b2bua.calls.values()
    at = ("127.0.0.1", audio_port(call.caller.sdp_to))
    for n in range(400):
        caller_rtp.sendto(event(1, n, 160 * n, True), at)
        if n % 50 == 0:
            await asyncio.sleep(0.01)
    bye = await next_request(h, "BYE")
    assert "entry too long, 3 times" in (bye.headers.get("Reason") or "")
    await h.settle()
    assert h.b2bua.calls == {} and not ports.in_use
    caller_rtp.close()
    no_errors(capsys.readouterr().out)


async def test_an_entry_longer_than_any_number_is_refused_and_the_next_one_taken(
        tmp_path: Path) -> None:
    h = reception(tmp_path)
    tag = await answered(h)
    await keys(h, tag, "7" * 33)
    [call] = h.b2bua.calls.values()
    assert call.reception is not None
    assert (call.reception.failures, call.reception.digits) == (1, "")
    await asyncio.sleep(0.1)
    await keys(h, tag, "1234#", first=40)
    refer = await next_request(h, "REFER")
    assert refer.headers.get("Refer-To") == "<sip:1234@127.0.0.1>"


async def test_a_caller_whose_media_stops_is_hung_up_and_its_ports_freed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    h = reception(tmp_path)
    ports = h.b2bua.ctx.ports
    assert ports is not None
    loop = asyncio.get_running_loop()
    h.now = loop.time()  # the relay's clock, as in the daemon
    h.configure(media_timeout=0.3)
    await answered(h)
    h.tick(loop.time() + 1.0)
    [bye] = [m for m, _ in h.take() if isinstance(m, Request) and m.method == "BYE"]
    assert "media timeout" in (bye.headers.get("Reason") or "")
    await h.settle()
    assert h.b2bua.calls == {} and not ports.in_use
    no_errors(capsys.readouterr().out)


async def test_a_caller_hanging_up_mid_prompt_stops_it_and_frees_the_ports(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    caller_rtp, heard, caller_port = await phone()
    config = parse_text(services(short_theme(tmp_path, b"\xff" * 160 * 250)), "t.toml",
                        base_dir=None)  # 5 s prompts
    h = reception(tmp_path)
    h.configure(router=Router(config.services, config.routing_rules))
    ports = h.b2bua.ctx.ports
    assert ports is not None
    tag = await answered(h, body=pcmu(caller_port))
    await asyncio.wait_for(heard.got.get(), 2)  # the welcome has begun
    h.feed(from_caller("BYE", 30, tag), CALLER)
    assert 200 in statuses(h.take(), CALLER)
    await h.settle()
    assert h.b2bua.calls == {} and not ports.in_use
    await asyncio.sleep(0.1)
    while not heard.got.empty():  # what was on its way
        heard.got.get_nowait()
    await asyncio.sleep(0.3)
    assert heard.got.empty()  # the prompt stopped with the call
    caller_rtp.close()
    no_errors(capsys.readouterr().out)
