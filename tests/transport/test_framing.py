"""Stream framing: pipelining, partial reads, keep-alives, and the errors that end a stream."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.transport.framing import Framed, Ping, StreamFramer, Unframed

MSG = (b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n"
       b"l: 5\r\n\r\nhello")
MSG2 = b"BYE sip:a@b SIP/2.0\r\nContent-Length: 0\r\n\r\n"


def test_pipelined_messages_and_pings_in_one_read() -> None:
    items = StreamFramer().feed(MSG + b"\r\n\r\n" + MSG2)
    assert items == [Framed(MSG), Ping(), Framed(MSG2)]


def test_partial_reads_wait_for_the_body() -> None:
    framer = StreamFramer()
    assert framer.feed(MSG[:30]) == []
    assert framer.feed(MSG[30:-2]) == []
    assert framer.feed(MSG[-2:]) == [Framed(MSG)]


def test_single_crlf_pong_is_ignored_and_split_ping_still_counts() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n") == []
    assert framer.feed(b"\r\n") == [Ping()]
    assert framer.feed(b"\r\n" + MSG2) == [Framed(MSG2)]


def test_missing_content_length_breaks_the_stream_with_400() -> None:
    framer = StreamFramer()
    items = framer.feed(b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\n")
    assert len(items) == 1 and isinstance(items[0], Unframed)
    assert items[0].error.status_hint == 400 and "Content-Length" in items[0].error.reason
    assert framer.broken and framer.feed(MSG) == []


def test_oversized_message_gives_513() -> None:
    framer = StreamFramer(max_message=1000)
    items = framer.feed(b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 5000\r\n\r\n")
    assert isinstance(items[0], Unframed) and items[0].error.status_hint == 513
    endless = StreamFramer(max_message=1000).feed(b"INVITE sip:a@b SIP/2.0\r\nX: " + b"a" * 2000)
    assert isinstance(endless[0], Unframed) and endless[0].error.status_hint == 513


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=40), max_size=30))
def test_any_chunking_yields_the_same_messages(cuts: list[int]) -> None:
    stream = MSG + b"\r\n\r\n" + MSG2 + MSG
    framer = StreamFramer()
    items = []
    pos = 0
    for size in cuts:
        items.extend(framer.feed(stream[pos : pos + size]))
        pos += size
    items.extend(framer.feed(stream[pos:]))
    assert items == [Framed(MSG), Ping(), Framed(MSG2), Framed(MSG)]
