"""A SIP caller dialling `88<Conference ID>@gw.example.com` (a rule with target
lync_meeting_direct) against a simulated Lync pool (tests/kit/focus.py): the look-up, the
focus, the lobby, the A/V MCU, and every way the join or the call ends, each leaving
nothing behind (no call, no dialog, no port) and the CDR's meeting column saying what
happened."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aioice
import pytest

from gateway.calls.cdr import CdrStore
from gateway.calls.settings import NextHop
from gateway.media import prompts
from gateway.media.prompts import TEXTS
from gateway.resolver.rfc3263 import Target
from gateway.sip.message import Request, Response, make_response
from gateway.transport.peer import Peer, Transport
from ice.ports import PortAllocator
from sdp.parse import parse_sdp
from tests.kit.audio import assert_speech, decode
from tests.kit.calls import CALLER, Harness, Phone, invite_with, phone, sdp_body
from tests.kit.focus import FOCUS, MCU, Focus, pump
from tests.kit.lync import LyncStream, audio_answer, connect_to_offer
from tests.kit.media import rtp
from tests.kit.reception import short_theme
from tests.peers import free_port

POOL = Target(Transport.UDP, "pool.contoso.com", "198.51.100.7", 5061)
POOL_PEER = Peer(Transport.UDP, POOL.address, POOL.port)
RULES = """
[[lync_servers]]
name = "pool"
address = "198.51.100.7"
port = 5061
transport = "tcp"

[[routing_rules]]
name = "Lync meeting direct"
priority = 10
protocols = ["sip"]
match = '88(\\w+)@gw\\.example\\.com'
replace = '\\1'
target = "lync_meeting_direct"
outgoing_protocol = "mssip"
call_via = "pool"
"""


def harness(tmp_path: Path, ports: PortAllocator | None = None, rules: str = RULES
            ) -> Harness:
    h = Harness([POOL], cdrs=CdrStore(tmp_path / "cdr.sqlite3"), ports=ports,
                address="127.0.0.1" if ports else "203.0.113.5", rules=rules)
    h.configure(next_hops={"pool": NextHop(POOL.address, POOL.port, Transport.UDP)},
                mssip_domain_default="vc.example.com")
    return h


async def dial(h: Harness, focus: Focus, conference_id: str = "4711",
               body: bytes = sdp_body(5004)) -> None:
    h.feed(invite_with(body, user=f"88{conference_id}"), CALLER)
    for _ in range(30):
        await h.settle()
    pump(h, focus, POOL_PEER)


def to_caller(h: Harness) -> list[Response | Request]:
    sent = h.take()
    assert all(p == CALLER for _, p in sent), [(m, p) for m, p in sent]
    return [m for m, _ in sent]  # type: ignore[misc]


def meeting_cdr(h: Harness) -> dict[str, object]:
    assert h.cdrs is not None and h.cdrs.flush()
    [row] = h.cdrs.recent(1)
    assert isinstance(row["meeting"], str)
    return dict(json.loads(row["meeting"]))


def left_nothing(h: Harness) -> None:
    ctx = h.b2bua.ctx
    assert not ctx.calls and not ctx.by_dialog
    assert ctx.deadlines.next() is None


def caller_leaves(h: Harness, focus: Focus, lobby_seconds: float) -> None:
    """The caller's BYE in the meeting: BYE to the MCU and the focus, the subscription
    ended, the CDR saying joined after `lobby_seconds` in the lobby."""
    h.feed(_bye_from_caller(h), CALLER)
    pump(h, focus, POOL_PEER)
    assert [m.uri for m in focus.got if m.method == "BYE"] == [MCU, FOCUS]
    assert_left_focus(focus)
    assert meeting_cdr(h) == {"conference_id": "4711", "focus": FOCUS,
                              "lobby_seconds": lobby_seconds, "outcome": "joined"}


def assert_left_focus(focus: Focus) -> None:
    """BYE on the focus dialog and the subscription ended (Expires: 0)."""
    assert "BYE" in focus.methods()
    unsubscribe = [m for m in focus.got if m.method == "SUBSCRIBE"][-1]
    assert unsubscribe.get("Expires") == "0"


async def test_unknown_conference_id_is_404_and_the_answer_is_cached(tmp_path: Path) -> None:
    """The pool's 'conferenceDoesNotExist' is the caller's 404 with the reason; a redial
    within the cache's time costs no second look-up."""
    h, focus = harness(tmp_path), Focus()
    await dial(h, focus, "999")
    [final] = [m for m in to_caller(h) if isinstance(m, Response) and m.status >= 200]
    assert final.status == 404 and "Conference ID 999" in final.reason
    assert focus.methods() == ["SERVICE"]
    assert b'conference-id="999"' in focus.got[0].body
    assert focus.got[0].get("Content-Type") == "application/cccp+xml"
    assert meeting_cdr(h)["outcome"] == "not found"
    left_nothing(h)
    await dial(h, focus, "999")
    assert [m.status for m in to_caller(h) if isinstance(m, Response)][-1] == 404
    assert focus.methods() == ["SERVICE"]


async def test_direct_dial_joins_focus_and_mcu(tmp_path: Path) -> None:
    """SERVICE, INVITE with addUser to the focus, SUBSCRIBE conference, INFO addUser for
    the MCU named in the conference-info, then the INVITE to the MCU; its 2xx answers the
    caller; the caller's BYE leaves the MCU, the focus and the subscription."""
    h, focus = harness(tmp_path), Focus()
    await dial(h, focus)
    assert focus.methods() == ["SERVICE", "INVITE", "ACK", "SUBSCRIBE", "INFO", "INVITE"]
    focus_invite = focus.got[1]
    assert focus_invite.uri == FOCUS and b"<addUser>" in focus_invite.body
    assert focus_invite.get("From").startswith("<sip:bob@vc.example.com>")
    assert focus.got[3].get("Event") == "conference"
    assert MCU.encode() in focus.got[4].body and b"dialed-in" in focus.got[4].body
    assert focus.mcu_invite is not None and focus.mcu_invite.uri == MCU
    assert focus.notifies[0][1] == 200
    h.feed(focus.answer_mcu(200, sdp_body(6000)), POOL_PEER)
    pump(h, focus, POOL_PEER)
    assert [m.status for m in to_caller(h) if isinstance(m, Response)][-1] == 200
    ok = [m for m in focus.got if m.method == "ACK"]
    assert len(ok) == 2  # the focus's 2xx and the MCU's
    caller_leaves(h, focus, lobby_seconds=0.0)
    left_nothing(h)


async def test_lobby_admit(tmp_path: Path) -> None:
    """A pending addUser holds the caller until the conference-info says it is connected
    (a node without media ports cannot play the lobby prompt: the caller hears ringing);
    then the MCU is asked for and called; the CDR has the lobby time."""
    h, focus = harness(tmp_path), Focus(lobby=True)
    await dial(h, focus)
    assert focus.methods() == ["SERVICE", "INVITE", "ACK", "SUBSCRIBE"]
    h.tick(2.5)
    assert [m.status for m in to_caller(h) if isinstance(m, Response)] == [100, 180]
    h.now = 12.0
    h.feed(focus.admit(), POOL_PEER)
    pump(h, focus, POOL_PEER)
    assert focus.methods()[-2:] == ["INFO", "INVITE"]
    h.feed(focus.answer_mcu(200, sdp_body(6000)), POOL_PEER)
    pump(h, focus, POOL_PEER)
    h.feed(focus.mcu_bye(), POOL_PEER)  # the MCU hangs up: the caller is told BYE
    pump(h, focus, POOL_PEER)
    assert any(isinstance(m, Request) and m.method == "BYE" for m in to_caller(h))
    assert_left_focus(focus)
    record = meeting_cdr(h)
    assert record["lobby_seconds"] == 12.0 and record["outcome"] == "joined"
    left_nothing(h)


async def test_lobby_refuse_and_lobby_timeout(tmp_path: Path) -> None:
    """A caller ringing in the lobby (no media ports: no prompt) sent away gets 403;
    never let in, 480 after the rule's lobby_timeout_seconds (40 here), not before.
    Both leave the focus."""
    h, focus = harness(tmp_path), Focus(lobby=True)
    await dial(h, focus)
    h.feed(focus.refuse(), POOL_PEER)
    pump(h, focus, POOL_PEER)
    assert [m.status for m in to_caller(h) if isinstance(m, Response)][-1] == 403
    assert_left_focus(focus)
    assert meeting_cdr(h)["outcome"] == "refused in the lobby"
    left_nothing(h)

    (tmp_path / "second").mkdir()
    h2 = harness(tmp_path / "second", rules=RULES + "lobby_timeout_seconds = 40\n")
    focus2 = Focus(lobby=True)
    await dial(h2, focus2)
    h2.tick(39.0)
    pump(h2, focus2, POOL_PEER)
    assert 480 not in [m.status for m in to_caller(h2) if isinstance(m, Response)]
    h2.tick(41.0)
    pump(h2, focus2, POOL_PEER)
    final = [m for m in to_caller(h2) if isinstance(m, Response)][-1]
    assert final.status == 480 and "lobby" in final.reason
    assert_left_focus(focus2)
    left_nothing(h2)


async def test_caller_gives_up_in_the_lobby(tmp_path: Path) -> None:
    """A CANCEL while the lobby holds the caller: 487, and the focus is left."""
    h, focus = harness(tmp_path), Focus(lobby=True)
    await dial(h, focus)
    h.feed(invite_with(sdp_body(5004), user="884711").replace(b"INVITE sip:", b"CANCEL sip:", 1)
           .replace(b"CSeq: 1 INVITE", b"CSeq: 1 CANCEL"), CALLER)
    pump(h, focus, POOL_PEER)
    assert 487 in [m.status for m in to_caller(h) if isinstance(m, Response)]
    assert_left_focus(focus)
    assert meeting_cdr(h)["outcome"] == "lobby"
    left_nothing(h)


async def test_mcu_that_never_answers(tmp_path: Path) -> None:
    """The MCU's INVITE times out (Timer B): 408 to the caller, the focus left."""
    h, focus = harness(tmp_path), Focus()
    await dial(h, focus)
    assert focus.mcu_invite is not None
    for t in range(1, 40):
        h.tick(float(t))
        pump(h, focus, POOL_PEER)
    final = [m for m in to_caller(h) if isinstance(m, Response)][-1]
    assert final.status == 408
    assert_left_focus(focus)
    left_nothing(h)


async def test_focus_ends_the_meeting(tmp_path: Path) -> None:
    """A BYE on the focus dialog ends the call: BYE to the caller and the MCU."""
    h, focus = harness(tmp_path), Focus()
    await dial(h, focus)
    h.feed(focus.answer_mcu(200, sdp_body(6000)), POOL_PEER)
    pump(h, focus, POOL_PEER)
    to_caller(h)
    h.feed(focus.bye(), POOL_PEER)
    pump(h, focus, POOL_PEER)
    assert any(isinstance(m, Request) and m.method == "BYE" for m in to_caller(h))
    assert [m.uri for m in focus.got if m.method == "BYE"] == [MCU]
    assert meeting_cdr(h)["outcome"] == "ended by the meeting"
    left_nothing(h)



async def test_the_subscription_is_refreshed_before_what_the_focus_granted_lapses(
        tmp_path: Path) -> None:
    """The focus grants 60 s: a re-SUBSCRIBE in the subscription's dialog at 54 s and,
    once that is answered, again 54 s later; the call goes on. A refresh the focus
    refuses ends the subscription only (in the meeting: the MCU's leg carries the call),
    and leaving then sends no unSUBSCRIBE."""
    h, focus = harness(tmp_path), Focus(subscription_seconds=60)
    await dial(h, focus)
    h.feed(focus.answer_mcu(200, sdp_body(6000)), POOL_PEER)
    pump(h, focus, POOL_PEER)
    first = next(m for m in focus.got if m.method == "SUBSCRIBE")
    for at in (53.0, 54.5, 108.0, 109.5):
        h.tick(at)
        pump(h, focus, POOL_PEER)
    refreshes = [m for m in focus.got if m.method == "SUBSCRIBE"][1:]
    assert len(refreshes) == 2
    for refresh in refreshes:
        assert refresh.get("Call-ID") == first.get("Call-ID") and "tag=" in refresh.get("To")
        assert refresh.get("Expires") == "3600" and refresh.get("Event") == "conference"
    [call] = h.b2bua.calls.values()
    assert call.connected
    focus.subscription_refused = True
    h.tick(164.0)
    pump(h, focus, POOL_PEER)
    assert call.connected and call.meeting is not None and call.meeting.subscription is None
    h.feed(_bye_from_caller(h), CALLER)
    pump(h, focus, POOL_PEER)
    assert [m.get("Expires") for m in focus.got if m.method == "SUBSCRIBE"][-1] == "3600"
    left_nothing(h)


async def test_c3p_infos_of_the_focus(tmp_path: Path) -> None:
    """An INFO of the focus carrying a C3P response is taken (200); an unreadable C3P one
    is 400, any other body 415 naming C3P; the call goes on through all three."""
    h, focus = harness(tmp_path), Focus()
    await dial(h, focus)
    h.feed(focus.answer_mcu(200, sdp_body(6000)), POOL_PEER)
    pump(h, focus, POOL_PEER)
    late = focus.add_user_answer(focus.got[4].body, "success", MCU)
    h.take()
    answers = []
    for body, kind in ((late, "application/cccp+xml"), (b"<response", "application/cccp+xml"),
                       (b"hello", "text/plain")):
        h.feed(focus.info(body, kind), POOL_PEER)
        [answer] = [m for m, _ in h.take() if isinstance(m, Response)]
        answers.append(answer)
    assert [a.status for a in answers] == [200, 400, 415]
    assert answers[2].headers.get("Accept") == "application/cccp+xml"
    [call] = h.b2bua.calls.values()
    assert call.connected


@pytest.mark.parametrize("body", [
    b"<response xmlns='urn:ietf:params:xml:ns:cccp'><getConference/>",  # cut short
    b'<!DOCTYPE x [<!ENTITY a "aaaa">]><response/>',  # a DTD
    b"<response xmlns='urn:ietf:params:xml:ns:cccp' code='success' requestId='1'>"
    b"<getConference/></response>",  # no focus in it
])
async def test_malformed_lookup_answer_is_502(tmp_path: Path, body: bytes) -> None:
    h, focus = harness(tmp_path), Focus(lookup_body=body)
    await dial(h, focus)
    final = [m for m in to_caller(h) if isinstance(m, Response)][-1]
    assert final.status == 502 and "malformed" in final.reason
    assert focus.methods() == ["SERVICE"]
    left_nothing(h)


async def test_malformed_add_user_answer_is_502_and_the_focus_is_left(tmp_path: Path
                                                                       ) -> None:
    """The focus's 2xx carries C3P we cannot read: its dialog is ACKed and ended with BYE,
    the caller gets 502."""
    h, focus = harness(tmp_path), Focus(add_user_body=b"<response><addUser>")
    await dial(h, focus)
    final = [m for m in to_caller(h) if isinstance(m, Response)][-1]
    assert final.status == 502 and "malformed C3P response" in final.reason
    assert focus.methods() == ["SERVICE", "INVITE", "ACK", "BYE"]
    left_nothing(h)


async def test_lookup_failures(tmp_path: Path) -> None:
    """The pool's own failure (otherFailure) is 503; a SERVICE nobody answers is 504."""
    failing = b"<response xmlns='urn:ietf:params:xml:ns:cccp' code='failure' requestId='1' " \
        b"reason='otherFailure'><getConference/></response>"
    h, focus = harness(tmp_path), Focus(lookup_body=failing)
    await dial(h, focus)
    assert [m.status for m in to_caller(h) if isinstance(m, Response)][-1] == 503
    (tmp_path / "second").mkdir()
    h2, silent = harness(tmp_path / "second"), Focus(lookup_silent=True)
    await dial(h2, silent)
    for t in range(1, 40):
        h2.tick(float(t))
        pump(h2, silent, POOL_PEER)
    final = [m for m in to_caller(h2) if isinstance(m, Response)][-1]
    assert final.status == 504 and "did not answer the lookup" in final.reason
    left_nothing(h2)


async def test_notify_flood_and_a_malformed_notify_in_the_meeting(tmp_path: Path) -> None:
    """Repeats of a version already seen are answered 200 and change nothing; an unreadable
    conference-info in a joined call is 400, and the call goes on."""
    h, focus = harness(tmp_path), Focus()
    await dial(h, focus)
    h.feed(focus.answer_mcu(200, sdp_body(6000)), POOL_PEER)
    pump(h, focus, POOL_PEER)
    [call] = h.b2bua.calls.values()
    assert call.meeting is not None and call.meeting.roster is not None
    version = call.meeting.roster.version
    first = focus.notifies[0][0].body
    for _ in range(200):
        h.feed(focus.notify(first), POOL_PEER)
        pump(h, focus, POOL_PEER)
    assert {status for _, status in focus.notifies[1:]} == {200}
    assert call.meeting.roster.version == version
    h.feed(focus.notify(b"<conference-info"), POOL_PEER)
    pump(h, focus, POOL_PEER)
    assert focus.notifies[-1][1] == 400 and call.connected


async def test_audio_flows_both_ways_through_the_mcu(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The MCU's media side is an ICE agent with SRTP (as a Lync endpoint): the caller's
    RTP reaches it and its RTP reaches the caller."""
    ports = loopback_ice(monkeypatch)
    phone_sock, phone_rx, phone_port = await phone()
    h, focus = harness(tmp_path, ports), Focus()
    await dial(h, focus, body=sdp_body(phone_port))
    mcu = await mcu_answers(h, focus)
    ok = [m for m in to_caller(h) if isinstance(m, Response)][-1]
    stream = await audio_both_ways(h, focus, mcu, phone_sock, phone_rx,
                                   parse_sdp(ok.body).media[0].port)
    h.feed(_bye_from_caller(h), CALLER)
    pump(h, focus, POOL_PEER)
    assert_left_focus(focus)
    await nothing_held(h, stream, phone_sock, ports)


@dataclass
class Mcu:
    """The A/V MCU's media side: an ICE agent (controlled) and its SRTP key and answer."""

    agent: aioice.Connection
    key: bytes
    answer: bytes


async def mcu_answers(h: Harness, focus: Focus) -> Mcu:
    """The MCU answers its INVITE with an ICE/SRTP audio answer."""
    assert focus.mcu_invite is not None
    agent = aioice.Connection(ice_controlling=False, components=1, use_ipv6=False)
    await agent.gather_candidates()
    key = os.urandom(30)
    mcu = Mcu(agent, key, audio_answer(agent, key))
    h.feed(focus.answer_mcu(200, mcu.answer), POOL_PEER)
    pump(h, focus, POOL_PEER)
    return mcu


async def audio_both_ways(h: Harness, focus: Focus, mcu: Mcu,
                          phone_sock: asyncio.DatagramTransport, phone_rx: Phone,
                          relay_port: int) -> LyncStream:
    """ICE between the MCU and the relay, the second offer answered, then the phone's RTP
    reaches the MCU (SRTP) and the MCU's the phone; the MCU's stream, to close."""
    assert focus.mcu_invite is not None
    offered = await connect_to_offer(mcu.agent, focus.mcu_invite.body)
    await until(h, focus, lambda: focus.mcu_invite is not None and focus.mcu_invite.get(
        "CSeq").startswith("2 "))  # the second offer (remote-candidates) goes to the MCU
    assert "remote-candidates" in focus.mcu_invite.body.decode()
    h.feed(focus.answer_mcu(200, mcu.answer), POOL_PEER)
    pump(h, focus, POOL_PEER)
    stream = LyncStream(mcu.agent, mcu.key, offered)
    phone_sock.sendto(rtp(1, pt=9, ssrc=5), ("127.0.0.1", relay_port))
    for _ in range(100):
        if stream.rtp:
            break
        await asyncio.sleep(0.02)
    assert stream.rtp == [rtp(1, pt=9, ssrc=5)]
    await stream.send(rtp(2, pt=9, ssrc=6))
    heard = await asyncio.wait_for(phone_rx.got.get(), 5)
    while heard[12:] == b"\xff" * 160:  # a reception's prompts, before the hand-on
        heard = await asyncio.wait_for(phone_rx.got.get(), 5)
    assert heard == rtp(2, pt=9, ssrc=6)
    return stream


def loopback_ice(monkeypatch: pytest.MonkeyPatch) -> PortAllocator:
    """ICE candidates on loopback only, and media ports for the call."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6:
                        ["127.0.0.1"])
    base = free_port()
    return PortAllocator(base, base + 40)


async def nothing_held(h: Harness, stream: LyncStream, phone_sock: asyncio.DatagramTransport,
                       ports: PortAllocator) -> None:
    """The test's media closed, the adapter's work done: every port of the call freed."""
    await stream.close()
    await freed(phone_sock, ports, h)


async def freed(phone_sock: asyncio.DatagramTransport, ports: PortAllocator,
                *harnesses: Harness) -> None:
    """The phone closed, each harness's adapter work done: every port freed."""
    phone_sock.close()
    for h in harnesses:
        for task in h.tasks:
            await task
    assert ports.in_use == set()


async def until(h: Harness, focus: Focus, done: Callable[[], bool]) -> None:
    """Lets prompts, the call's set-up and the pool run until `done`."""
    for _ in range(200):
        await asyncio.sleep(0.01)
        pump(h, focus, POOL_PEER)
        if done():
            return
    raise AssertionError("not done in 2 s")


def _bye_from_caller(h: Harness) -> bytes:
    return _from_caller(h, "BYE", 2)


def _from_caller(h: Harness, method: str, cseq: int) -> bytes:
    """A request of the caller's in its call (ACK for our 2xx: CSeq 1)."""
    [call] = h.b2bua.calls.values()
    return (f"{method} sip:gw@203.0.113.5 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-{method.lower()}{cseq};rport\r\n"
            "From: \"Bob\" <sip:bob@example.org>;tag=caller\r\n"
            f"To: <sip:884711@gw.example.com>;tag={call.in_tag}\r\nCall-ID: in-call-1\r\n"
            f"CSeq: {cseq} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            ).encode()


# -- the lobby prompt: a caller held in the lobby is answered and hears "please wait" ------
@pytest.fixture
def short_prompts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every default prompt one 20 ms packet: the flow, not the speech, is under test."""
    folder = tmp_path / "prompts"
    folder.mkdir()
    monkeypatch.setattr(prompts, "DEFAULT", short_theme(folder))
    prompts.forget()
    yield
    prompts.forget()  # (before monkeypatch puts the real folder back)


async def in_lobby(h: Harness, focus: Focus, phone_port: int) -> Response:
    """The caller dials, the meeting holds it in its lobby, and the lobby prompt answers
    it (acknowledged): that 200 OK."""
    await dial(h, focus, body=sdp_body(phone_port))
    await until(h, focus, lambda: all(call.answered for call in h.b2bua.calls.values()))
    [ok] = [m for m in to_caller(h) if isinstance(m, Response) and m.status == 200]
    h.feed(_from_caller(h, "ACK", 1), CALLER)
    return ok


async def heard(rx: Phone, first: float = 3.0, quiet: float = 0.4) -> bytes:
    """The payload of what the phone gets, from the first packet (within `first` s) until
    `quiet` s pass without one."""
    payload = (await asyncio.wait_for(rx.got.get(), first))[12:]
    while True:
        try:
            payload += (await asyncio.wait_for(rx.got.get(), quiet))[12:]
        except TimeoutError:
            return payload


def drained(rx: Phone) -> int:
    count = 0
    while not rx.got.empty():
        rx.got.get_nowait()
        count += 1
    return count


async def hung_up(h: Harness, focus: Focus) -> Request:
    """Waits (prompts play in real time) for the BYE to the caller."""
    for _ in range(500):
        await asyncio.sleep(0.01)
        pump(h, focus, POOL_PEER)
        byes = [m for m, p in h.take() if isinstance(m, Request) and m.method == "BYE"]
        if byes:
            return byes[0]
    raise AssertionError("no BYE to the caller in 5 s")


async def test_the_lobby_prompt_answers_the_caller_and_admission_moves_it_onto_the_mcu(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Held in the lobby, the caller is answered (200 OK: the node's own G.722 port, as the
    reception answers) and hears "please wait", decoded to speech of its words' length;
    let in, the MCU is asked for and called, and its answer re-INVITEs the caller onto the
    relay (the next version of our SDP), audio then flowing both ways through the MCU;
    the caller's BYE leaves MCU and focus. The CDR: answered, lobby time, joined."""
    ports = loopback_ice(monkeypatch)
    phone_sock, phone_rx, phone_port = await phone()
    h, focus = harness(tmp_path, ports), Focus(lobby=True)
    ok = await in_lobby(h, focus, phone_port)
    assert focus.methods() == ["SERVICE", "INVITE", "ACK", "SUBSCRIBE"]
    answer = parse_sdp(ok.body)
    assert answer.media[0].formats == ["9"] and answer.origin[2] == "1"
    assert_speech(*decode(await heard(phone_rx), "G722"), TEXTS["lobby_wait"])
    h.now = 12.0
    h.feed(focus.admit(), POOL_PEER)
    pump(h, focus, POOL_PEER)
    assert focus.methods()[-2:] == ["INFO", "INVITE"]
    mcu = await mcu_answers(h, focus)
    [reinvite] = [m for m in to_caller(h) if isinstance(m, Request) and m.method == "INVITE"]
    moved = parse_sdp(reinvite.body)
    assert reinvite.call_id == "in-call-1" and moved.origin[2] == "2"
    assert moved.media[0].port != answer.media[0].port  # the relay's port, not the prompt's
    h.feed(make_response(reinvite, 200, body=sdp_body(phone_port),
                         content_type="application/sdp"), CALLER)
    await asyncio.sleep(0.05)
    drained(phone_rx)  # "connecting", played while the MCU was called
    stream = await audio_both_ways(h, focus, mcu, phone_sock, phone_rx, moved.media[0].port)
    caller_leaves(h, focus, lobby_seconds=12.0)
    assert h.cdrs is not None and h.cdrs.recent(1)[0]["answered"] is not None
    left_nothing(h)
    await nothing_held(h, stream, phone_sock, ports)


async def test_sent_away_from_the_lobby_the_caller_hears_why_then_bye(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Refused while the prompt plays: the focus is left at once (BYE, unSUBSCRIBE), the
    caller hears "you were not let in to the meeting. Goodbye." (speech of that length)
    and then gets BYE with the 403's reason; the CDR says refused in the lobby."""
    ports = loopback_ice(monkeypatch)
    phone_sock, phone_rx, phone_port = await phone()
    h, focus = harness(tmp_path, ports), Focus(lobby=True)
    await in_lobby(h, focus, phone_port)
    await asyncio.wait_for(phone_rx.got.get(), 3)  # the lobby prompt is playing
    h.feed(focus.refuse(), POOL_PEER)
    pump(h, focus, POOL_PEER)
    drained(phone_rx)
    assert_left_focus(focus)
    assert not [m for m, _ in h.take() if isinstance(m, Request) and m.method == "BYE"]
    goodbye = await heard(phone_rx)
    assert_speech(*decode(goodbye, "G722"), f"{TEXTS['not_admitted']} {TEXTS['goodbye']}")
    bye = await hung_up(h, focus)
    assert "403 Forbidden (the meeting did not admit us)" in (bye.headers.get("Reason") or "")
    assert meeting_cdr(h)["outcome"] == "refused in the lobby"
    assert h.cdrs is not None and str(h.cdrs.recent(1)[0]["end_cause"]).startswith("403 ")
    left_nothing(h)
    await freed(phone_sock, ports, h)


@pytest.mark.usefixtures("short_prompts")
async def test_the_prompt_repeats_until_the_lobby_times_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """"Please wait" comes again PROMPT_PAUSE (10 s) after it ends while the lobby holds
    the caller; after the rule's lobby_timeout_seconds (40), not before, the caller hears
    the not-admitted goodbye and gets BYE with the 480's reason; the CDR says lobby
    timeout with the time held."""
    ports = loopback_ice(monkeypatch)
    phone_sock, phone_rx, phone_port = await phone()
    h = harness(tmp_path, ports, rules=RULES + "lobby_timeout_seconds = 40\n")
    focus = Focus(lobby=True)
    await in_lobby(h, focus, phone_port)
    [call] = h.b2bua.calls.values()
    assert call.meeting is not None
    await until(h, focus, lambda: call.meeting is not None and call.meeting.prompt_at == 10.0)
    assert drained(phone_rx) == 1
    h.tick(10.0)
    await asyncio.wait_for(phone_rx.got.get(), 2)  # again
    await until(h, focus, lambda: call.meeting is not None and call.meeting.prompt_at == 20.0)
    h.tick(39.0)
    pump(h, focus, POOL_PEER)
    assert call.connected and "BYE" not in focus.methods()
    h.tick(41.0)
    pump(h, focus, POOL_PEER)
    assert_left_focus(focus)
    bye = await hung_up(h, focus)
    assert "480 Temporarily Unavailable (nobody admitted" in (bye.headers.get("Reason") or "")
    assert meeting_cdr(h) == {"conference_id": "4711", "focus": FOCUS, "lobby_seconds": 41.0,
                              "outcome": "lobby timeout"}
    left_nothing(h)
    await freed(phone_sock, ports, h)


@pytest.mark.usefixtures("short_prompts")
async def test_a_caller_hanging_up_in_the_lobby_leaves_focus_and_mcu(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A BYE from the caller the lobby prompt answered: 200, the focus left (BYE,
    unSUBSCRIBE), every port freed. Let in and hanging up while the MCU is still being
    called: the MCU's late 2xx is ACKed and ended with BYE."""
    ports = loopback_ice(monkeypatch)
    phone_sock, _, phone_port = await phone()
    h, focus = harness(tmp_path, ports), Focus(lobby=True)
    await in_lobby(h, focus, phone_port)
    h.feed(_bye_from_caller(h), CALLER)
    pump(h, focus, POOL_PEER)
    assert [m.status for m in to_caller(h) if isinstance(m, Response)] == [200]
    assert_left_focus(focus)
    assert meeting_cdr(h)["outcome"] == "lobby"
    left_nothing(h)

    (tmp_path / "second").mkdir()
    h2, focus2 = harness(tmp_path / "second", ports), Focus(lobby=True)
    await in_lobby(h2, focus2, phone_port)
    h2.feed(focus2.admit(), POOL_PEER)
    pump(h2, focus2, POOL_PEER)
    assert focus2.mcu_invite is not None
    h2.feed(_bye_from_caller(h2), CALLER)
    pump(h2, focus2, POOL_PEER)
    assert_left_focus(focus2)
    h2.feed(focus2.answer_mcu(200, sdp_body(6000)), POOL_PEER)
    pump(h2, focus2, POOL_PEER)
    assert focus2.methods()[-2:] == ["ACK", "BYE"] and focus2.got[-1].uri == MCU
    left_nothing(h2)
    await freed(phone_sock, ports, h, h2)


@pytest.mark.usefixtures("short_prompts")
async def test_an_mcu_ringing_past_the_set_up_limit_behind_the_prompt(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Let in, the MCU rings and never answers: SETUP_LIMIT (181 s) after it was called
    (the caller's own set-up limit ended with the prompt's answer) the MCU's leg is
    cancelled, the focus left, and the caller hears goodbye and gets BYE with a 408."""
    ports = loopback_ice(monkeypatch)
    phone_sock, _, phone_port = await phone()
    h, focus = harness(tmp_path, ports), Focus(lobby=True)
    await in_lobby(h, focus, phone_port)
    h.now = 5.0
    h.feed(focus.admit(), POOL_PEER)
    pump(h, focus, POOL_PEER)
    h.feed(focus.answer_mcu(180), POOL_PEER)
    h.tick(185.0)
    pump(h, focus, POOL_PEER)
    assert "CANCEL" not in focus.methods()
    h.tick(186.5)
    pump(h, focus, POOL_PEER)
    assert "CANCEL" in focus.methods()
    assert_left_focus(focus)
    bye = await hung_up(h, focus)
    assert "408 Request Timeout (the A/V MCU did not answer" in (
        bye.headers.get("Reason") or "")
    left_nothing(h)
    await freed(phone_sock, ports, h)


# -- the same meeting, its Conference ID entered at a Virtual Reception ----------------------
RECEPTION = """
[[lync_servers]]
name = "pool"
address = "198.51.100.7"
port = 5061
transport = "tcp"

[[services]]
type = "virtual_reception"
name = "SfB lobby"
aliases = ["sfb.lobby@gw.example.com"]
theme = "{theme}"
lync_server = "pool"

[[routing_rules]]
name = "Lync clients or meetings, via a Virtual Reception"
priority = 60
protocols = ["sip"]
match_full_uri = true
match = '.*@contoso\\.com.*'
target = "lync_via_virtual_reception"
outgoing_protocol = "mssip"
call_via = "pool"
"""


def reception(tmp_path: Path, ports: PortAllocator) -> Harness:
    h = Harness([POOL], cdrs=CdrStore(tmp_path / "cdr.sqlite3"), ports=ports,
                address="127.0.0.1",
                rules=RECEPTION.replace("{theme}", str(short_theme(tmp_path))))
    h.configure(next_hops={"pool": NextHop(POOL.address, POOL.port, Transport.UDP)},
                mssip_domain_default="vc.example.com")
    return h


async def at_reception(h: Harness, body: bytes) -> str:
    """The caller dials the reception and is answered: the To tag of its leg."""
    h.feed(invite_with(body, user="sfb.lobby"), CALLER)
    await h.settle()
    ok = [m for m in to_caller(h) if isinstance(m, Response) and m.status == 200]
    assert ok and ok[0].to.tag
    return ok[0].to.tag


def keyed(h: Harness, tag: str, digits: str, first: int = 1) -> None:
    """The caller's keys by SIP INFO (dtmf-relay), each answered 200."""
    for n, key in enumerate(digits, first):
        body = f"Signal={key}\r\nDuration=160\r\n"
        h.feed((f"INFO sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5062;"
                f"branch=z9hG4bK-info{n}\r\nFrom: \"Bob\" <sip:bob@example.org>;tag=caller\r\n"
                f"To: <sip:sfb.lobby@gw.example.com>;tag={tag}\r\nCall-ID: in-call-1\r\n"
                f"CSeq: {n + 1} INFO\r\nContent-Type: application/dtmf-relay\r\n"
                f"Content-Length: {len(body)}\r\n\r\n{body}").encode(), CALLER)
        assert 200 in [m.status for m in to_caller(h) if isinstance(m, Response)]



async def test_a_conference_id_entered_at_the_reception_joins_the_meeting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reception's lync_server looks the ID up; the focus URI routes by the full-URI
    lync_via_virtual_reception rule; the caller (whose INVITE allows REFER: a meeting is
    joined by a leg of ours all the same) is handed on to the meeting: focus, conference
    subscription, MCU addUser, the MCU's INVITE with our ICE/SRTP offer; the MCU's answer
    re-INVITEs the caller onto the relay and audio flows both ways through it; the
    caller's BYE leaves MCU and focus. One CDR: the reception's, with the meeting."""
    ports = loopback_ice(monkeypatch)
    phone_sock, phone_rx, phone_port = await phone()
    h, focus = reception(tmp_path, ports), Focus()
    tag = await at_reception(h, sdp_body(phone_port))
    keyed(h, tag, "4711#")
    await until(h, focus, lambda: focus.mcu_invite is not None)
    assert focus.methods() == ["SERVICE", "INVITE", "ACK", "SUBSCRIBE", "INFO", "INVITE"]
    assert focus.got[1].uri == FOCUS and b"<addUser>" in focus.got[1].body
    assert not any(isinstance(m, Request) and m.method == "REFER" for m in to_caller(h))
    mcu = await mcu_answers(h, focus)
    [reinvite] = [m for m in to_caller(h) if isinstance(m, Request) and m.method == "INVITE"]
    assert reinvite.call_id == "in-call-1"
    h.feed(make_response(reinvite, 200, body=sdp_body(phone_port),
                         content_type="application/sdp"), CALLER)
    stream = await audio_both_ways(h, focus, mcu, phone_sock, phone_rx,
                                   parse_sdp(reinvite.body).media[0].port)
    h.feed(_bye_from_caller(h).replace(b"884711@", b"sfb.lobby@"), CALLER)
    pump(h, focus, POOL_PEER)
    assert [m.uri for m in focus.got if m.method == "BYE"] == [MCU, FOCUS]
    assert_left_focus(focus)
    record = meeting_cdr(h)
    assert record["conference_id"] == "4711" and record["outcome"] == "joined"
    assert h.cdrs is not None and h.cdrs.recent(1)[0]["service"] == "SfB lobby"
    left_nothing(h)
    await nothing_held(h, stream, phone_sock, ports)


async def test_an_unknown_conference_id_at_the_reception_is_prompted_again(
        tmp_path: Path) -> None:
    """An ID the pool does not know, and an entry that is no Conference ID, are each one
    failure ("that meeting was not found", then the number again), the call staying up
    with nothing of the meeting left; the third failure says goodbye."""
    base = free_port()
    ports = PortAllocator(base, base + 40)
    h, focus = reception(tmp_path, ports), Focus()
    tag = await at_reception(h, sdp_body(5004))
    [call] = h.b2bua.calls.values()
    keyed(h, tag, "999#")
    await until(h, focus, lambda: focus.methods() == ["SERVICE"])
    await h.settle()
    assert call.connected and call.meeting is None and call.reception is not None
    assert call.reception.failures == 1 and not h.b2bua.ctx.by_dialog.keys() - {
        ("in-call-1", tag)}
    keyed(h, tag, "999#", first=10)  # cached: no second look-up
    await h.settle()
    assert focus.methods() == ["SERVICE"] and call.reception.failures == 2
    keyed(h, tag, "12*34#", first=20)
    await until(h, focus, lambda: any(isinstance(m, Request) and m.method == "BYE"
                                      for m, _ in h.take()))
    assert "not a Conference ID, 3 times" in (call.record.end_cause or "")
    assert h.b2bua.calls == {} and ports.in_use == set()
