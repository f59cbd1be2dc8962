"""A simulated Lync/SfB pool for meeting joins: the focus factory that resolves Conference
IDs, one meeting's focus (addUser, conference-info subscription and NOTIFYs, lobby) and its
A/V MCU's signalling. It shares no code with `gateway/`: its SIP is read and written here
as text, its C3P and conference-info documents are the spec examples in
tests/conferencing/fixtures with our names put in. It speaks bytes: `receive` takes what
the gateway sent it and returns what it sends back (`pump` wires it to the call harness).
The MCU's media side is the test's (an ICE agent that answers `mcu_invite`)."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent.parent / "conferencing" / "fixtures"
FOCUS = "sip:organiser@contoso.com;gruu;opaque=app:conf:focus:id:BE92"
MCU = "sip:organiser@contoso.com;gruu;opaque=app:conf:audio-video:id:BE92"
CI = "urn:ietf:params:xml:ns:conference-info"


@dataclass
class Sip:
    """One SIP message as text: start line, headers in order, body."""

    start: str
    headers: list[tuple[str, str]]
    body: bytes

    @classmethod
    def parse(cls, data: bytes) -> Sip:
        head, _, body = data.partition(b"\r\n\r\n")
        start, *lines = head.decode().split("\r\n")
        headers = [(n.strip(), v.strip()) for n, _, v in (line.partition(":") for line in lines)]
        return cls(start, headers, body)

    def get(self, name: str) -> str:
        return next((v for n, v in self.headers if n.lower() == name.lower()), "")

    @property
    def method(self) -> str:
        return "" if self.start.startswith("SIP/2.0") else self.start.split(" ", 1)[0]

    @property
    def status(self) -> int:
        return int(self.start.split(" ")[1]) if self.start.startswith("SIP/2.0") else 0

    @property
    def uri(self) -> str:
        return self.start.split(" ")[1]


def write(start: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    lines = [start, *(f"{n}: {v}" for n, v in headers), f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _uri(name_addr: str) -> str:
    found = re.search(r"<([^>]*)>", name_addr)
    return found.group(1) if found else name_addr.split(";")[0]


@dataclass
class Focus:
    """The pool. `meetings`: Conference ID -> focus URI. `lobby`: callers wait to be let in
    (`admit` / `refuse`). `lookup_body`, `add_user_body`: an answer body instead of the
    real one (a malformed document, say); `lookup_silent`: the SERVICE is never answered."""

    meetings: dict[str, str] = field(default_factory=lambda: {"4711": FOCUS})
    lobby: bool = False
    lookup_body: bytes | None = None
    add_user_body: bytes | None = None
    lookup_silent: bool = False
    subscription_seconds: int = 3600  # what the focus grants a SUBSCRIBE (its 2xx's Expires)
    subscription_refused: bool = False  # a refresh is answered 481 (the focus forgot it)
    via: str = "SIP/2.0/UDP 198.51.100.7:5061"  # how the pool's own requests say it sent them
    got: list[Sip] = field(default_factory=list)  # every request the pool received
    mcu_invite: Sip | None = None  # the newest INVITE to the MCU, for the test to answer
    notifies: list[tuple[Sip, int]] = field(default_factory=list)  # NOTIFYs and answers
    _tags: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _version: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _subscription: Sip | None = None
    _focus_tag: str = ""
    _me: str = ""
    _cseq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def methods(self) -> list[str]:
        return [m.method for m in self.got]

    def receive(self, data: bytes) -> list[bytes]:
        message = Sip.parse(data)
        if message.status:
            if message.get("CSeq").endswith("NOTIFY"):
                self.notifies[-1] = (self.notifies[-1][0], message.status)
            return []
        self.got.append(message)
        handler = getattr(self, f"_on_{message.method.lower()}", None)
        return handler(message) if handler is not None else []

    # -- the requests the gateway sends -------------------------------------------------------
    def _on_service(self, request: Sip) -> list[bytes]:
        conference_id = re.search(rb'conference-id="([^"]*)"', request.body)
        request_id = _request_id(request.body)
        if self.lookup_silent:
            return []
        if self.lookup_body is not None:
            body = self.lookup_body
        elif conference_id and conference_id.group(1).decode() in self.meetings:
            focus = self.meetings[conference_id.group(1).decode()]
            body = _response(request_id, "success", "getConference",
                             f'<conference-info entity="{focus}"/>')
        else:
            body = _response(request_id, "failure", "getConference",
                             "", reason="conferenceDoesNotExist")
        return [self._answer(request, 200, body, "application/cccp+xml")]

    def _on_invite(self, request: Sip) -> list[bytes]:
        if request.uri == MCU:
            self.mcu_invite = request
            return []
        self._me = _uri(request.get("From"))
        code = "pending" if self.lobby else "success"
        body = self.add_user_body or self.add_user_answer(request.body, code, FOCUS)
        return [self._answer(request, 200, body, "application/cccp+xml", tag="focus")]

    def _on_info(self, request: Sip) -> list[bytes]:
        code = "pending" if self.lobby else "success"
        return [self._answer(request, 200, self.add_user_answer(request.body, code, MCU),
                             "application/cccp+xml")]

    def _on_subscribe(self, request: Sip) -> list[bytes]:
        if request.get("Expires") == "0":
            return [self._answer(request, 200, extra=[("Expires", "0")])]
        if self.subscription_refused and "tag=" in request.get("To"):
            return [self._answer(request, 481)]
        self._subscription = request
        ok = self._answer(request, 200, extra=[("Expires", str(self.subscription_seconds))])
        self._focus_tag = re.search(r"tag=([^;]+)", Sip.parse(ok).get("To")).group(1)  # type: ignore[union-attr]
        return [ok, self.notify(self._roster(full=True))]

    def _on_bye(self, request: Sip) -> list[bytes]:
        return [self._answer(request, 200)]

    # -- what the meeting does by itself -----------------------------------------------------
    def admit(self) -> bytes:
        """The organiser lets the caller in: the lobby state changes in a partial NOTIFY."""
        self.lobby = False
        return self.notify(self._roster(full=False))

    def refuse(self) -> bytes:
        return self.notify(self._roster(full=False, status="disconnected"))

    def notify(self, document: bytes, version: int | None = None) -> bytes:
        """A NOTIFY on the subscription carrying `document` (its version as written)."""
        subscribe = self._subscription
        assert subscribe is not None
        self.notifies.append((Sip("NOTIFY", [], document), 0))
        return write(f"NOTIFY {_uri(subscribe.get('Contact'))} SIP/2.0", [
            ("Via", f"{self.via};branch=z9hG4bK-n{next(self._tags)}"),
            ("Max-Forwards", "70"),
            ("From", f"<{FOCUS}>;tag={self._focus_tag}"), ("To", subscribe.get("From")),
            ("Call-ID", subscribe.get("Call-ID")), ("CSeq", f"{next(self._cseq)} NOTIFY"),
            ("Contact", f"<{FOCUS}>"), ("Event", "conference"),
            ("Subscription-State", "active;expires=3600"),
            ("Content-Type", "application/conference-info+xml")], document)

    def info(self, body: bytes, content_type: str) -> bytes:
        """An INFO of the focus's own on the focus dialog."""
        invite = next(m for m in self.got if m.method == "INVITE" and m.uri == FOCUS)
        return write(f"INFO {_uri(invite.get('Contact'))} SIP/2.0", [
            ("Via", f"{self.via};branch=z9hG4bK-i{next(self._tags)}"),
            ("Max-Forwards", "70"), ("From", f"<{FOCUS}>;tag=focus"),
            ("To", invite.get("From")), ("Call-ID", invite.get("Call-ID")),
            ("CSeq", f"{next(self._cseq)} INFO"), ("Content-Type", content_type)], body)

    def bye(self) -> bytes:
        """The focus ends the caller's place in the meeting (BYE on the focus dialog)."""
        invite = next(m for m in self.got if m.method == "INVITE" and m.uri == FOCUS)
        return write(f"BYE {_uri(invite.get('Contact'))} SIP/2.0", [
            ("Via", f"{self.via};branch=z9hG4bK-fbye"),
            ("Max-Forwards", "70"), ("From", f"<{FOCUS}>;tag=focus"),
            ("To", invite.get("From")), ("Call-ID", invite.get("Call-ID")),
            ("CSeq", "1 BYE")])

    def answer_mcu(self, status: int, sdp: bytes = b"") -> bytes:
        """The MCU's answer to its newest INVITE (an SDP answer with a 2xx)."""
        assert self.mcu_invite is not None
        return self._answer(self.mcu_invite, status, sdp, "application/sdp" if sdp else "",
                            tag="mcu")

    def mcu_bye(self) -> bytes:
        invite = self.mcu_invite
        assert invite is not None
        return write(f"BYE {_uri(invite.get('Contact'))} SIP/2.0", [
            ("Via", f"{self.via};branch=z9hG4bK-mbye"),
            ("Max-Forwards", "70"), ("From", f"<{MCU}>;tag=mcu"),
            ("To", invite.get("From")), ("Call-ID", invite.get("Call-ID")), ("CSeq", "9 BYE")])

    # -- documents ----------------------------------------------------------------------------
    def _roster(self, *, full: bool, status: str = "") -> bytes:
        """conference-info ([RFC 4575], [MS-CONFBAS] 2.2.2.2): the MCU's URI, the organiser,
        and the caller's endpoint status (pending while in the lobby)."""
        status = status or ("pending" if self.lobby else "connected")
        uris = ("<conf-uris><entry><uri>" + MCU + "</uri><purpose>audio-video</purpose>"
                "</entry></conf-uris>") if full else ""
        organiser = ('<user entity="sip:organiser@contoso.com"><display-text>Organiser'
                     '</display-text><endpoint entity="e1"><status>connected</status>'
                     '</endpoint></user>') if full else ""
        return (f'<?xml version="1.0" encoding="utf-8"?><conference-info xmlns="{CI}" '
                f'entity="{FOCUS}" state="{"full" if full else "partial"}" '
                f'version="{next(self._version)}"><conference-description>{uris}'
                f'</conference-description><users>{organiser}<user entity="{self._me}">'
                f'<endpoint entity="gw"><status>{status}</status></endpoint></user></users>'
                "</conference-info>").encode()

    def add_user_answer(self, request_body: bytes, code: str, conference: str) -> bytes:
        """[MS-CONFBAS] 2.2.3.4's addUser response, for this caller and conference."""
        spec = (FIXTURES / "confbas-2.2.3.4-addUser-response.xml").read_text()
        spec = spec.replace("sip:user@fabrikam.com;gruu;opaque=app:conf:focus:id:BE92",
                            conference).replace("sip:user@fabrikam.com", self._me)
        spec = re.sub(r'requestId="\d+"', f'requestId="{_request_id(request_body)}"', spec)
        return spec.replace('code="success"', f'code="{code}"').encode()

    def _answer(self, request: Sip, status: int, body: bytes = b"", content_type: str = "",
                extra: list[tuple[str, str]] | None = None, tag: str = "") -> bytes:
        to = request.get("To")
        if "tag=" not in to:
            to += f";tag={tag or f'f{next(self._tags)}'}"
        headers = [(n, v) for n, v in request.headers if n.lower() in ("via", "from", "call-id",
                                                                        "cseq")]
        headers.insert(2, ("To", to))
        headers.append(("Contact", f"<{MCU if tag == 'mcu' else FOCUS}>"))
        headers += extra or []
        if content_type:
            headers.append(("Content-Type", content_type))
        return write(f"SIP/2.0 {status} {'OK' if status == 200 else 'Whatever'}", headers,
                     body)


def _request_id(body: bytes) -> str:
    found = re.search(rb'requestId="(\d+)"', body)
    return found.group(1).decode() if found else "0"


def _response(request_id: str, code: str, command: str, inside: str, reason: str = ""
              ) -> bytes:
    why = f' reason="{reason}"' if reason else ""
    return (f'<response xmlns="urn:ietf:params:xml:ns:cccp" C3PVersion="1" '
            f'requestId="{request_id}" from="sip:x@contoso.com" to="sip:y@contoso.com" '
            f'code="{code}"{why}><{command}>{inside}</{command}></response>').encode()


def pump(harness: Any, focus: Focus, peer: Any) -> None:
    """Carries what the call harness sends the pool (to `peer`'s address) to `focus`, and
    the pool's answers back, until neither has anything more; what the harness sends
    anyone else stays in `harness.out`."""
    while True:
        mine = [s for s in harness.out if (s.peer.host, s.peer.port) == (peer.host, peer.port)]
        if not mine:
            return
        harness.out[:] = [s for s in harness.out if s not in mine]
        for sent in mine:
            for reply in focus.receive(sent.data):
                harness.feed(reply, peer)
