"""Presence driven through the endpoint without sockets: the real B2BUA with the real
`Presence`, a clock the test sets, and the SUBSCRIBE forms Lync and a standard client send."""

from __future__ import annotations

import itertools

from gateway.calls.b2bua import B2bua
from gateway.calls.settings import CallLimits, CallSettings, Local
from gateway.config.load import parse_text
from gateway.presence.handler import OPTION_TAGS, Presence
from gateway.presence.subscriptions import Limits
from gateway.sip.endpoint import Endpoint, EndpointSettings
from gateway.sip.message import Message, Request, Response
from gateway.sip.parse import parse_message
from gateway.sip.transaction_machines import Send
from gateway.sip.validate import SUPPORTED
from gateway.transport.peer import Peer, Transport
from routing.engine import Router

LYNC = Peer(Transport.TLS, "192.0.2.20", 5061, connection=7)
PHONE = Peer(Transport.UDP, "192.0.2.30", 5062)
CONFIG = """
[[services]]
type = "vmr"
name = "Board room"
description = "The fourth-floor board room"
aliases = ["meet.board@vc.example.com"]
target = "sip:mcu@mcu.example.com"

[[routing_rules]]
name = "rooms"
description = "Video rooms by city"
priority = 10
protocols = ["sip", "mssip"]
match = '[a-z]+-room\\d\\d\\d@vc\\.example\\.com'
"""
AVATARS = "http://gw.example.com:8081"
_ids = itertools.count(1)


def router(text: str = CONFIG) -> Router:
    config = parse_text(text, "t.toml", base_dir=None)
    return Router(config.services, config.routing_rules)


class PresenceHarness:
    def __init__(self, limits: Limits | None = None, config: str = CONFIG) -> None:
        local = Local("203.0.113.5", {Transport.UDP: 5060, Transport.TLS: 5061},
                      "gw.example.com")
        self.presence = Presence(router(config), local, avatar_base=AVATARS, limits=limits,
                                 wall_clock=lambda: 1_700_000_000.0)
        self.b2bua = B2bua(CallSettings(router=router(config), limits=CallLimits()),
                           local=local, resolver=None,  # type: ignore[arg-type]
                           presence=self.presence)
        self.ep = Endpoint(EndpointSettings(server="lyncgate/test",
                                            supported=SUPPORTED | OPTION_TAGS),
                           handler=self.b2bua)
        self.now = 0.0
        self.out: list[Send] = []

    def feed(self, data: bytes | Message, peer: Peer) -> list[tuple[Message, Peer]]:
        raw = data if isinstance(data, bytes) else data.to_bytes()
        self.out += [e for e in self.ep.receive(raw, peer, None, self.now)
                     if isinstance(e, Send)]
        return self.take()

    def tick(self, now: float) -> list[tuple[Message, Peer]]:
        self.now = now
        self.out += [e for e in self.ep.handle_timeout(now) if isinstance(e, Send)]
        return self.take()

    def reload(self, config: str) -> list[tuple[Message, Peer]]:
        self.out += [e for e in self.presence.configure(router(config), AVATARS, 2, self.now,
                                                        self.ep) if isinstance(e, Send)]
        return self.take()

    def take(self) -> list[tuple[Message, Peer]]:
        sent = [(parse_message(s.data), s.peer) for s in self.out]
        self.out.clear()
        return sent


def responses(sent: list[tuple[Message, Peer]]) -> list[Response]:
    return [m for m, _ in sent if isinstance(m, Response) and m.status >= 200]


def requests(sent: list[tuple[Message, Peer]], method: str = "NOTIFY") -> list[Request]:
    return [m for m, _ in sent if isinstance(m, Request) and m.method == method]


def subscribe(uri: str, peer: Peer, *, call_id: str = "", cseq: int = 1, to_tag: str = "",
              expires: int | None = 3600, event: str = "presence", accept: str = "",
              supported: str = "", require: str = "", body: bytes = b"",
              content_type: str = "") -> bytes:
    call_id = call_id or f"sub-{next(_ids)}"
    transport = peer.transport.upper()
    lines = [f"SUBSCRIBE {uri} SIP/2.0",
             f"Via: SIP/2.0/{transport} {peer.host}:{peer.port};branch=z9hG4bK-{call_id}-{cseq}",
             "Max-Forwards: 70",
             f"From: <sip:alice@example.com>;tag=from-{call_id}",
             f"To: <{uri}>" + (f";tag={to_tag}" if to_tag else ""),
             f"Call-ID: {call_id}", f"CSeq: {cseq} SUBSCRIBE",
             f"Contact: <sip:alice@{peer.host}:{peer.port};transport={transport.lower()}>"]
    if event:
        lines.append(f"Event: {event}")
    if expires is not None:
        lines.append(f"Expires: {expires}")
    for name, value in (("Accept", accept), ("Supported", supported), ("Require", require),
                        ("Content-Type", content_type)):
        if value:
            lines.append(f"{name}: {value}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def lync_subscribe(uri: str, **kwargs: object) -> bytes:
    """A single-contact subscription as Lync's pool sends it ([MS-PRES] 4.11 form)."""
    return subscribe(uri, LYNC, accept="application/msrtc-event-categories+xml, "
                     "text/xml+msrtc.pidf, application/pidf+xml",
                     supported="ms-piggyback-first-notify, ms-benotify",
                     **kwargs)  # type: ignore[arg-type]


def batch_body(uris: list[str], categories: tuple[str, ...] = ("contactCard", "state")) -> bytes:
    resources = "".join(f'<resource uri="{u}"/>' for u in uris)
    names = "".join(f'<category name="{c}"/>' for c in categories)
    return ('<batchSub xmlns="http://schemas.microsoft.com/2006/01/sip/batch-subscribe" '
            'uri="sip:alice@example.com" name=""><action name="subscribe" id="63792024">'
            f"<adhocList>{resources}</adhocList>"
            '<categoryList xmlns="http://schemas.microsoft.com/2006/09/sip/categorylist">'
            f"{names}</categoryList></action></batchSub>").encode()


def notify_answer(notify: Request, status: int) -> bytes:
    """The subscriber's answer to our NOTIFY."""
    lines = [f"SIP/2.0 {status} Whatever", *(f"Via: {v}" for v in notify.headers.get_all("Via")),
             f"From: {notify.headers.get('From')}", f"To: {notify.headers.get('To')}",
             f"Call-ID: {notify.call_id}", f"CSeq: {notify.headers.get('CSeq')}",
             "Content-Length: 0"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
