"""A call's life against its settings and its clock: the media timeout is a deadline on call
control's heap (no loop timer of its own), a call keeps the config generation it was
admitted under through a reload, and INVITEs that cannot set up a dialog are refused before
anything is placed, as are headers the gateway only carries (fuzzing found each of these
ending in an exception or a call that never ended)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.calls.protocol import arriving_protocol
from gateway.sip.message import Request, Response, make_response
from gateway.sip.parse import parse_message
from ice.ports import PortAllocator
from tests.kit.calls import (
    CALLER,
    FIRST,
    Harness,
    invite,
    invite_with,
    outbound,
    sdp_body,
    statuses,
)
from tests.peers import free_port

FIXTURES = Path(__file__).parent.parent / "sip" / "fixtures"


def second_call(data: bytes) -> bytes:
    """The same INVITE as another call: its own Call-ID, branch and tag."""
    return (data.replace(b"Call-ID: in-call-1", b"Call-ID: in-call-2")
            .replace(b"z9hG4bK-in1", b"z9hG4bK-in2").replace(b"tag=caller", b"tag=caller2"))


async def connect(h: Harness, data: bytes, callee_tag: str) -> Response:
    """Place `data`'s call and have the callee answer it with SDP; returns our 200."""
    h.feed(data, CALLER)
    for _ in range(20):
        await h.settle()
    out, peer = outbound(h.take(), "INVITE")
    h.feed(make_response(out, 200, to_tag=callee_tag, body=sdp_body(5000),
                         content_type="application/sdp",
                         headers=(("Contact", "<sip:a@198.51.100.1>"),)), peer)
    return next(m for m, _ in h.take() if isinstance(m, Response) and m.status == 200)


def byes(sent: list[tuple[object, object]]) -> list[Request]:
    return [m for m, _ in sent if isinstance(m, Request) and m.method == "BYE"]


async def test_silent_media_ends_the_call_from_the_deadline_heap() -> None:
    """Nobody sends on an anchored call: when call control's clock passes the media timeout
    it sends BYE on both legs with the reason, and the relay's ports come back."""
    base = free_port()
    ports = PortAllocator(base, base + 20)
    h = Harness([FIRST], ports=ports, address="127.0.0.1")
    loop = asyncio.get_running_loop()
    h.now = start = loop.time()  # the relay's clock, as in the daemon
    h.configure(media_timeout=0.3)
    await connect(h, invite_with(sdp_body(4000)), "callee")
    deadline = h.b2bua.next_deadline()
    assert deadline is not None and deadline <= start + 0.3  # checked at least that often
    h.tick(loop.time())  # not silent for 0.3 s yet
    assert byes(h.take()) == [] and len(h.b2bua.calls) == 1
    h.tick(loop.time() + 1.0)
    sent = byes(h.take())
    assert len(sent) == 2
    assert all("media timeout: no packets for 0.3 s" in (b.headers.get("Reason") or "")
               for b in sent)
    assert h.b2bua.calls == {}
    await h.settle()
    assert ports.in_use == set()


async def test_a_reload_applies_to_the_next_call_never_to_one_in_progress() -> None:
    """Admitted under a 60 s media timeout, a call keeps it after a reload to 0.3 s; the
    call admitted after the reload gets 0.3 s."""
    base = free_port()
    h = Harness([FIRST], ports=PortAllocator(base, base + 20), address="127.0.0.1")
    h.now = asyncio.get_running_loop().time()  # the relay's clock, as in the daemon
    await connect(h, invite_with(sdp_body(4000)), "first")
    h.configure(media_timeout=0.3)
    await connect(h, second_call(invite_with(sdp_body(4002))), "second")
    first, second = h.b2bua.calls.values()
    assert first.settings.media_timeout == 60.0 and second.settings.media_timeout == 0.3
    h.tick(asyncio.get_running_loop().time() + 5.0)
    ended = byes(h.take())
    assert {b.call_id for b in ended if b.call_id.startswith("in-call")} == {"in-call-2"}
    assert list(h.b2bua.calls.values()) == [first]


async def test_an_invite_that_cannot_set_up_a_dialog_is_refused_before_it_is_placed() -> None:
    """Without a Contact, with one that does not parse, or with a Record-Route our requests
    could not follow: 400 naming the header, no INVITE toward the callee, no call kept."""
    broken = {
        "no Contact": invite().replace(b"Contact: <sip:bob@192.0.2.10:5062>\r\n", b""),
        "bad Contact": invite().replace(b"Contact: <sip:bob@192.0.2.10:5062>",
                                        b"Contact: <sip:bob@192.0.2.10:5062"),
        "bad Record-Route": invite().replace(b"Max-Forwards: 70\r\n",
                                             b"Max-Forwards: 70\r\nRecord-Route: <sip:p;lr\r\n"),
    }
    for what, data in broken.items():
        h = Harness([FIRST])
        h.feed(data, CALLER)
        await h.settle()
        sent = h.take()
        assert statuses(sent, CALLER) == [100, 400], what
        refused = next(m for m, _ in sent if isinstance(m, Response) and m.status == 400)
        header = what.split(" ", 1)[1]
        assert header in refused.reason, (what, refused.reason)
        assert not [m for m, _ in sent if isinstance(m, Request)], what
        assert h.b2bua.calls == {}, what


async def test_a_carried_header_the_gateway_cannot_read_is_carried_as_written() -> None:
    """A P-Asserted-Identity with an unterminated quote and a comma is the caller's to
    send: the callee gets it as written, and the call is placed."""
    odd = 'P-Asserted-Identity: "Bob, <sip:bob@example.org>\r\n'
    h = Harness([FIRST])
    h.feed(invite().replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\n" + odd.encode()),
           CALLER)
    await h.settle()
    out, _ = outbound(h.take(), "INVITE")
    assert out.headers.lines("P-Asserted-Identity") == ['"Bob, <sip:bob@example.org>']


async def test_a_callee_that_rings_past_the_setup_limit_is_cancelled() -> None:
    """Nobody answers for three minutes (RFC 3261's Timer C): CANCEL toward the callee,
    408 to the caller, and the call is over."""
    h = Harness([FIRST])
    h.feed(invite(), CALLER)
    await h.settle()
    out, peer = outbound(h.take(), "INVITE")
    h.feed(make_response(out, 180, to_tag="callee"), peer)
    h.take()
    h.tick(180.0)
    assert statuses(h.take(), CALLER) == []
    h.tick(181.0)
    sent = h.take()
    assert [m.method for m, _ in sent if isinstance(m, Request)] == ["CANCEL"]
    assert statuses(sent, CALLER) == [408]
    assert h.b2bua.calls == {}


async def test_a_set_up_that_never_finishes_ends_as_an_internal_error() -> None:
    """A look-up that never returns (a bug somewhere below call control): the caller gets
    500 at the set-up limit, the call is counted as stuck, and its media side is closed."""

    class Hung:
        def resolve_now(self, uri: object) -> None:
            return None

        async def resolve(self, uri: object, *, federation: bool = False) -> list[object]:
            await asyncio.Event().wait()
            return []

    base = free_port()
    ports = PortAllocator(base, base + 20)
    h = Harness([FIRST], ports=ports, address="127.0.0.1")
    h.use_resolver(Hung())  # type: ignore[arg-type]
    h.feed(invite_with(sdp_body(4000)), CALLER)
    await h.settle()
    assert statuses(h.take(), CALLER) == [100] and ports.in_use  # relay ports taken
    h.tick(181.0)
    sent = h.take()
    assert statuses(sent, CALLER) == [180, 500]  # the local 180 came due first
    assert h.b2bua.calls == {} and h.b2bua.statistics().stuck == 1
    assert ports.in_use == set()
    for task in h.tasks:
        task.cancel()


async def test_the_sip_leg_of_a_lync_call_says_what_the_gateway_is() -> None:
    """A Lync caller's INVITE (its product, conversation, endpoint ID, option tags, methods)
    placed toward a SIP endpoint: the SIP leg carries the gateway's own User-Agent, Allow and
    Supported, none of Lync's, so a SIP callee (or a second gateway) sees a SIP call."""
    lync = (FIXTURES / "lync_invite.txt").read_bytes().replace(
        b"INVITE sip:meet.alice@vc.example.com", b"INVITE sip:alice@gw.example.com")
    request = parse_message(lync)
    assert isinstance(request, Request) and arriving_protocol(request) == "mssip"
    h = Harness([FIRST])
    h.feed(lync, CALLER)
    await h.settle()
    out, _ = outbound(h.take(), "INVITE")
    assert arriving_protocol(out) == "sip"
    assert (out.headers.get("User-Agent") or "").startswith("lyncgate/")
    assert "Ms-Conversation-ID" not in out.headers
    assert out.from_.param("epid") is None and out.from_.tag
    assert out.tokens("supported") == ["timer"]
    assert set(out.tokens("allow")) == set(h.ep.allow.lower().split(", "))


async def test_an_anchored_call_with_a_body_it_cannot_read_is_refused_before_placing() -> None:
    """Fuzzing found calls placed signalling-only, no media anchored, because their body had
    no Content-Type or an unknown one: 400 and 415 (with Accept) instead, nothing placed."""
    base = free_port()
    for header, status in ((b"", 400), (b"Content-Type: applicati6n/sdp\r\n", 415)):
        h = Harness([FIRST], ports=PortAllocator(base, base + 20), address="127.0.0.1")
        h.feed(invite_with(sdp_body(4000)).replace(b"Content-Type: application/sdp\r\n",
                                                   header), CALLER)
        await h.settle()
        sent = h.take()
        assert statuses(sent, CALLER) == [100, status]
        assert not [m for m, _ in sent if isinstance(m, Request)]
        refused = next(m for m, _ in sent if isinstance(m, Response) and m.status == status)
        if status == 415:
            assert "application/sdp" in (refused.headers.get("Accept") or "")
        assert h.b2bua.calls == {}
