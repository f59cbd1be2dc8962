"""REGISTER through the endpoint: challenge, digest answer (SHA-256 and MD5), bindings with
their expiry persisted in SQLite, 423 for short intervals, removal, refusals; and calls to a
registered device going where it registered from (480 when a rule wants only registered
devices and the alias is not registered)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.calls import digest
from gateway.calls.registrar import BindingStore, Registrar
from gateway.config.load import parse_text
from gateway.sip.message import Request, Response
from gateway.transport.peer import Peer
from ice.ports import PortAllocator
from sdp.parse import parse_sdp
from tests.kit.calls import (
    FIRST,
    Harness,
    invite_with,
    outbound,
    sdp_body,
    statuses,
)
from tests.peers import free_port

DEVICE = Peer("TCP", "192.0.2.44", 51234, connection=7)
CONFIG = """
[[devices]]
alias = "room12@vc.example.com"
username = "room12"
password = "s3cret!"

[[routing_rules]]
name = "to registered rooms"
priority = 10
protocols = ["sip", "mssip"]
match = 'room\\d+@vc\\.example\\.com'
target = "registered_only"
"""
NOW = [1_700_000_000.0]


def registrar(path: Path | None) -> Registrar:
    config = parse_text(CONFIG, "t.toml", base_dir=None)
    return Registrar(devices=config.devices, realm="vc.example.com",
                     store=BindingStore(path), clock=lambda: NOW[0],
                     nonces=digest.Nonces(b"n" * 32))


def register(expires: int = 600, auth: str = "", contact: str | None = None,
             cseq: int = 1) -> bytes:
    contact = contact or f"<sip:room12@192.0.2.44:51234;transport=tcp>;expires={expires}"
    return (
        "REGISTER sip:vc.example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP 192.0.2.44:51234;branch=z9hG4bK-reg{cseq}\r\n"
        "From: <sip:room12@vc.example.com>;tag=dev\r\nTo: <sip:room12@vc.example.com>\r\n"
        f"Call-ID: reg-1\r\nCSeq: {cseq} REGISTER\r\nContact: {contact}\r\n"
        f"Max-Forwards: 70\r\n{auth}Content-Length: 0\r\n\r\n"
    ).encode()


def answer_challenge(challenge: str, algorithm: str, password: str = "s3cret!") -> str:
    nonce = challenge.split('nonce="')[1].split('"')[0]
    creds = digest.Credentials("room12", "vc.example.com", nonce, "sip:vc.example.com", "",
                               algorithm, "auth", "00000001", "c0ffee")
    value = digest.response(creds, "REGISTER", password)
    return (f'Authorization: Digest username="room12", realm="vc.example.com", '
            f'nonce="{nonce}", uri="sip:vc.example.com", response="{value}", '
            f"algorithm={algorithm}, qop=auth, nc=00000001, cnonce=\"c0ffee\"\r\n")


def harness(path: Path | None) -> Harness:
    return Harness([FIRST], registrar=registrar(path), rules=CONFIG)


def do_register(h: Harness, expires: int = 600, algorithm: str = "SHA-256",
                password: str = "s3cret!") -> Response:
    h.feed(register(expires), DEVICE)
    [(challenge, _)] = h.take()
    assert isinstance(challenge, Response) and challenge.status == 401
    offered = challenge.headers.get_all("WWW-Authenticate")
    chosen = next(c for c in offered if f"algorithm={algorithm}" in c)
    h.feed(register(expires, answer_challenge(chosen, algorithm, password), cseq=2), DEVICE)
    [(final, _)] = h.take()
    assert isinstance(final, Response)
    return final


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_register_with_digest_and_the_binding_survives_a_restart(
    tmp_path: Path, algorithm: str
) -> None:
    h = harness(tmp_path / "reg.sqlite3")
    ok = do_register(h, algorithm=algorithm)
    assert ok.status == 200
    assert ok.headers.get("Contact") == (
        "<sip:room12@192.0.2.44:51234;transport=tcp>;expires=600")
    restarted = registrar(tmp_path / "reg.sqlite3")
    [binding] = restarted.bindings("room12@vc.example.com")
    assert (binding.transport, binding.host, binding.port) == ("TCP", "192.0.2.44", 51234)
    NOW[0] += 601
    assert restarted.bindings("room12@vc.example.com") == []  # expired
    NOW[0] -= 601


def test_wrong_password_unknown_device_short_interval_and_removal() -> None:
    h = harness(None)
    assert do_register(h, password="guess").status == 401
    h.feed(register().replace(b"room12@vc", b"room99@vc"), DEVICE)
    assert statuses(h.take(), DEVICE) == [404]
    short = do_register(h, expires=30)
    assert short.status == 423 and short.headers.get("Min-Expires") == "60"
    assert do_register(h).status == 200
    h.feed(register(auth="", contact="*").replace(b"Max-Forwards", b"Expires: 0\r\nMax-"
                                                  b"Forwards"), DEVICE)
    [(challenge, _)] = h.take()
    assert isinstance(challenge, Response) and challenge.status == 401  # removal is guarded
    auth = answer_challenge(challenge.headers.get_all("WWW-Authenticate")[0], "SHA-256")
    h.feed(register(auth=auth, contact="*", cseq=3).replace(
        b"Max-Forwards", b"Expires: 0\r\nMax-Forwards"), DEVICE)
    assert statuses(h.take(), DEVICE) == [200]
    assert h.registrar is not None
    assert h.registrar.bindings("room12@vc.example.com") == []


async def test_calls_to_a_registered_device_go_where_it_registered_from() -> None:
    h = harness(None)
    h.feed(register().replace(b"Call-ID: reg-1", b"Call-ID: reg-2"), DEVICE)
    h.take()
    assert do_register(h).status == 200
    h.feed(b"INVITE sip:room12@vc.example.com SIP/2.0\r\n"
           b"Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-c1;rport\r\n"
           b"From: <sip:bob@example.org>;tag=caller\r\nTo: <sip:room12@vc.example.com>\r\n"
           b"Call-ID: call-reg\r\nCSeq: 1 INVITE\r\nContact: <sip:bob@192.0.2.10>\r\n"
           b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n", Peer("UDP", "192.0.2.10", 5062))
    for _ in range(5):
        await asyncio.sleep(0)
    out, peer = outbound(h.take(), "INVITE")
    assert isinstance(out, Request)
    assert out.uri_text == "sip:room12@192.0.2.44:51234;transport=tcp"
    assert (peer.transport, peer.host, peer.port) == ("TCP", "192.0.2.44", 51234)


async def test_a_call_to_a_registered_device_has_its_media_anchored_too() -> None:
    """The device's binding replaces DNS, not the media plan: with media anchored, the
    device is offered the relay's ports, as a resolved callee would be."""
    base = free_port()
    h = Harness([FIRST], registrar=registrar(None), rules=CONFIG,
                ports=PortAllocator(base, base + 20), address="127.0.0.1")
    assert do_register(h).status == 200
    h.feed(invite_with(sdp_body(4000), "room12").replace(b"gw.example.com",
                                                         b"vc.example.com"),
           Peer("UDP", "192.0.2.10", 5062))
    for _ in range(20):
        await h.settle()
    out, peer = outbound(h.take(), "INVITE")
    assert (peer.transport, peer.host, peer.port) == ("TCP", "192.0.2.44", 51234)
    offer = parse_sdp(out.body)
    assert offer.media[0].port != 4000 and base <= offer.media[0].port <= base + 20


async def test_registered_only_rule_and_an_unregistered_alias_gets_480() -> None:
    h = harness(None)
    caller = Peer("UDP", "192.0.2.10", 5062)
    h.feed(b"INVITE sip:room12@vc.example.com SIP/2.0\r\n"
           b"Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-c2;rport\r\n"
           b"From: <sip:bob@example.org>;tag=caller\r\nTo: <sip:room12@vc.example.com>\r\n"
           b"Call-ID: call-unreg\r\nCSeq: 1 INVITE\r\nContact: <sip:bob@192.0.2.10>\r\n"
           b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n", caller)
    for _ in range(5):
        await asyncio.sleep(0)
    sent = h.take()
    assert statuses(sent, caller) == [100, 480]
    final = next(m for m, _ in sent if isinstance(m, Response) and m.status == 480)
    assert "room12@vc.example.com is not registered" in final.reason


def test_a_device_limited_to_md5_is_offered_only_md5_and_refuses_sha256() -> None:
    config = parse_text(CONFIG.replace('password = "s3cret!"', 'password = "s3cret!"\n'
                                       'digest = ["MD5"]'), "t.toml", base_dir=None)
    reg = Registrar(devices=config.devices, realm="vc.example.com",
                    store=BindingStore(None), clock=lambda: NOW[0],
                    nonces=digest.Nonces(b"n" * 32))
    h = Harness([FIRST], registrar=reg, rules=CONFIG)
    h.feed(register(), DEVICE)
    [(challenge, _)] = h.take()
    assert isinstance(challenge, Response)
    [offered] = challenge.headers.get_all("WWW-Authenticate")
    assert "algorithm=MD5" in offered
    h.feed(register(auth=answer_challenge(offered, "SHA-256"), cseq=2), DEVICE)
    assert statuses(h.take(), DEVICE) == [401]
